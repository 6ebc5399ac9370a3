//! The control thread: one thread per node, at the main thread's priority, with an executor
//! of its own, that serves the connections on which peers send election messages. Client
//! connections, forwarding and checkpoint traffic run on async-std's executor: a flood of
//! clients queues there, never in front of a peer's heartbeat. (This node's own
//! election messages go out from async-std's executor: carried on this one thread too, a
//! hundred members on two cores no longer agreed within two minutes.)

use std::future::Future;
use std::sync::{Arc, OnceLock};

static CONTROL: OnceLock<Arc<async_executor::Executor<'static>>> = OnceLock::new();

/// Starts the control thread (once; later calls do nothing). Call from a thread at the
/// priority control traffic should have: the new thread inherits it.
pub fn start() {
    executor();
}

fn executor() -> &'static Arc<async_executor::Executor<'static>> {
    CONTROL.get_or_init(|| {
        let executor = Arc::new(async_executor::Executor::new());
        let running = executor.clone();
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || async_std::task::block_on(running.run(std::future::pending::<()>())))
            .expect("a thread can be started");
        executor
    })
}

/// Runs `task` on the control thread.
pub fn spawn(task: impl Future<Output = ()> + Send + 'static) {
    executor().spawn(task).detach();
}
