//! Group commit for a Durable Object's SQLite: writes that arrive while a commit is being made
//! durable wait and go into the next commit together.
//!
//! On one machine a Durable Object's commit is bounded by the disk's fsyncs (~3 per commit,
//! ~615 fsyncs/s here), and each of a fleet index shard's upserts used to be its own commit:
//! one per twin write, beside the device object's own. Here the first writer to arrive finds
//! no commit under way and starts a driver (a task of the object, not of any one request) that
//! writes it at once, in one synchronous stretch (which Durable Objects commit atomically),
//! then waits for `storage.sync()`. Whatever arrives meanwhile is queued, written as one
//! stretch when that commit is durable, and so on until the queue is empty. One writer alone
//! waits for nothing more than before; under load, commits carry as many writes as arrived
//! during the last one.
//!
//! Every writer is answered only once its own write is durable, with its own outcome: one
//! write that fails does not fail the others in its commit.

use futures_channel::oneshot;
use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;

/// What a writer is told: its write is durable, or why not.
pub type Outcome = Result<(), String>;

/// The queue of one object's writes of type `T`.
pub struct GroupCommit<T> {
    inner: RefCell<Queue<T>>,
}

struct Queue<T> {
    /// A driver is running: new writes wait for it.
    driving: bool,
    waiting: Vec<(T, oneshot::Sender<Outcome>)>,
}

impl<T: 'static> GroupCommit<T> {
    pub fn new() -> Rc<Self> {
        Rc::new(Self { inner: RefCell::new(Queue { driving: false, waiting: Vec::new() }) })
    }

    /// Writes `item` with the next commit and answers once that commit is durable. `write`
    /// writes one item (synchronously: no `await` may split a commit's writes); `sync` waits
    /// until everything written so far is durable.
    pub async fn submit<W, S, F>(self: &Rc<Self>, item: T, write: W, sync: S) -> Outcome
    where
        W: Fn(&T) -> Outcome + 'static,
        S: Fn() -> F + 'static,
        F: Future<Output = Outcome> + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut queue = self.inner.borrow_mut();
            queue.waiting.push((item, tx));
            !std::mem::replace(&mut queue.driving, true)
        };
        if start {
            let this = Rc::clone(self);
            worker::wasm_bindgen_futures::spawn_local(async move { this.drive(write, sync).await });
        }
        rx.await.unwrap_or_else(|_| Err("the commit was abandoned".into()))
    }

    /// Commits what is queued, batch after batch, until nothing is.
    async fn drive<W, S, F>(&self, write: W, sync: S)
    where
        W: Fn(&T) -> Outcome,
        S: Fn() -> F,
        F: Future<Output = Outcome>,
    {
        loop {
            let batch = {
                let mut queue = self.inner.borrow_mut();
                if queue.waiting.is_empty() {
                    queue.driving = false;
                    return;
                }
                std::mem::take(&mut queue.waiting)
            };
            let written: Vec<Outcome> = batch.iter().map(|(item, _)| write(item)).collect();
            let durable = sync().await;
            for ((_, tx), outcome) in batch.into_iter().zip(written) {
                let _ = tx.send(outcome.and_then(|()| durable.clone()));
            }
        }
    }
}
