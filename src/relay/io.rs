//! What the pumps read with and how a session's futures wait: the stream
//! type as a parameter (`Source`), the spare read buffers, and the gate that
//! keeps the timers' wait from being polled for every pump wake-up.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};

use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::net::tcp::ReadHalf;

/// Read buffers of the smallest size, kept per thread for the next read:
/// a session gives its buffer back each time it goes idle, and a fresh one
/// each time would take malloc's slow path (it is bigger than malloc's
/// per-thread cache), thousands of times a second. A few are kept; an idle
/// session holds none.
pub(super) mod spare {
    use std::cell::RefCell;

    const KEPT: usize = 16;

    thread_local! {
        static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    }

    pub(in crate::relay) fn take() -> Vec<u8> {
        SPARE.with(|s| s.borrow_mut().pop()).unwrap_or_default()
    }

    pub(in crate::relay) fn give(mut buf: Vec<u8>) {
        if buf.capacity() != super::super::READ_MIN {
            return;
        }
        buf.clear();
        SPARE.with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < KEPT {
                s.push(buf);
            }
        });
    }
}

/// What a pump reads from: the stream type is a parameter of the shell, so
/// that another transport (TLS) plugs in without touching the driver. A
/// source reads what it holds without waiting, and says when it may have
/// more; an idle direction then holds no buffer, only this wait.
pub(crate) trait Source {
    /// Reads what is there into `buf`'s spare room; `WouldBlock` when
    /// nothing is.
    fn read_draining(&mut self, buf: &mut Vec<u8>) -> io::Result<usize>;
    /// Ready when a read may find something (or an error).
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl Source for ReadHalf<'_> {
    /// A read that leaves room proves the socket drained, so it also clears
    /// tokio's readiness (as tokio's own `poll_read` does): the next wait
    /// then sleeps at once rather than costing a `recv` that says EAGAIN.
    /// The read happens inside `try_io` so that only the readiness it saw
    /// is cleared, never a newer one.
    fn read_draining(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        let stream: &TcpStream = self.as_ref();
        let room = buf.capacity() - buf.len();
        let mut got = None;
        let r = stream.try_io(Interest::READABLE, || {
            let n = stream.try_read_buf(buf)?;
            got = Some(n);
            if n > 0 && n < room { Err(io::ErrorKind::WouldBlock.into()) } else { Ok(n) }
        });
        match got {
            Some(n) => Ok(n),
            None => r,
        }
    }

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let stream: &TcpStream = self.as_ref();
        stream.poll_read_ready(cx)
    }
}

/// Runs `fut`, polling it only when one of its own wakers fired. A
/// session's futures share one task, and `join!`/`select!` poll each of
/// them whenever any is woken: nearly every wake-up is for a pump, and the
/// timers' wait (the cut token, the manual cut, a sleep) takes locks each
/// time it is polled.
pub(super) fn gated<F: Future>(fut: F) -> Gated<F> {
    let gate = Arc::new(Gate { woken: AtomicBool::new(true), task: OnceLock::new() });
    Gated { fut, waker: Waker::from(gate.clone()), gate }
}

pin_project_lite::pin_project! {
    /// See [`gated`]. A struct, not an `async fn`: that would hold `fut`
    /// twice in every session's state.
    pub(in crate::relay) struct Gated<F> {
        #[pin]
        fut: F,
        gate: Arc<Gate>,
        waker: Waker,
    }
}

impl<F: Future> Future for Gated<F> {
    type Output = F::Output;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let task = this.gate.task.get_or_init(|| cx.waker().clone());
        if !task.will_wake(cx.waker()) {
            // Polled on behalf of another task: no gate.
            return this.fut.poll(cx);
        }
        // Cleared before polling: a wake-up during the poll is kept.
        if !this.gate.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.fut.poll(&mut Context::from_waker(this.waker))
    }
}

/// The waker of a [`gated`] future: marks it woken, then wakes its task.
pub(in crate::relay) struct Gate {
    woken: AtomicBool,
    task: OnceLock<Waker>,
}

impl Wake for Gate {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        if let Some(task) = self.task.get() {
            task.wake_by_ref();
        }
    }
}

/// Resolves when the first of `futs` does (a tiny `select_all`, to avoid
/// a dependency for one use).
pub(super) async fn futures_select_all<F: std::future::Future<Output = ()> + Unpin>(futs: &mut [F]) {
    std::future::poll_fn(|cx| {
        for f in futs.iter_mut() {
            if std::pin::Pin::new(f).poll(cx).is_ready() {
                return std::task::Poll::Ready(());
            }
        }
        std::task::Poll::Pending
    })
    .await
}
