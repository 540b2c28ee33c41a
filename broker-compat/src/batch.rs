//! Adaptive batching ("group commit") of small, independent Redis writes —
//! acks and result stores. Callers submit one item and await their own
//! answer; a single flusher task sends everything that queued up while the
//! previous batch was in flight as one request.
//!
//! Why: at thousands of tasks per second the cost of a Redis ack or result
//! write is the round trip (two syscalls and a wake-up on each side), not the
//! command. Batching adds no delay when idle — a lone item is sent at once —
//! and under load it turns N round trips into one. Each item is still
//! answered separately, so a caller sees exactly its own outcome.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

use crate::{Error, Result};

type Job<I, O> = (I, oneshot::Sender<Result<O>>);

/// The submitting side; the flusher stops when every clone is dropped.
pub(crate) struct Batcher<I, O> {
    tx: mpsc::UnboundedSender<Job<I, O>>,
}

impl<I, O> Clone for Batcher<I, O> {
    fn clone(&self) -> Self {
        Batcher {
            tx: self.tx.clone(),
        }
    }
}

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    /// Spawn the flusher on the current Tokio runtime. `flush` gets up to
    /// `max` items in submission order and returns one answer per item, in
    /// the same order, or the error that failed the whole batch (then every
    /// caller gets it).
    pub(crate) fn spawn<F, Fut>(max: usize, mut flush: F) -> Self
    where
        F: FnMut(Vec<I>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<O>>> + Send,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job<I, O>>();
        tokio::spawn(async move {
            let mut jobs = Vec::with_capacity(max);
            while rx.recv_many(&mut jobs, max).await > 0 {
                let (items, replies): (Vec<I>, Vec<_>) = jobs.drain(..).unzip();
                let n = items.len();
                let answers: Vec<Result<O>> = match flush(items).await {
                    Ok(answers) if answers.len() == n => answers.into_iter().map(Ok).collect(),
                    Ok(answers) => {
                        let e = format!("a batch of {n} writes got {} answers", answers.len());
                        (0..n).map(|_| Err(Error::Protocol(e.clone()))).collect()
                    }
                    Err(e) => (0..n).map(|_| Err(share(&e))).collect(),
                };
                for (reply, answer) in replies.into_iter().zip(answers) {
                    // The caller may have stopped waiting (cancelled): fine.
                    let _ = reply.send(answer);
                }
            }
        });
        Batcher { tx }
    }

    /// Queue `item` and wait for its answer.
    pub(crate) async fn submit(&self, item: I) -> Result<O> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((item, reply))
            .map_err(|_| Error::Closed("the batch writer has stopped".into()))?;
        answer.await.map_err(|_| {
            // The flusher dropped the reply: its runtime is shutting down.
            Error::Closed("the batch writer stopped before answering".into())
        })?
    }
}

/// A batch's error, for each of its callers: Redis errors keep their kind
/// (`is_transient` still answers right); others keep their message.
fn share(e: &Error) -> Error {
    match e {
        Error::Redis(e) => Error::Redis(e.clone()),
        e => Error::Closed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn items_queued_during_a_flush_go_out_together_in_order() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let batcher: Batcher<u32, u32> = Batcher::spawn(64, move |items: Vec<u32>| {
            seen.lock().unwrap().push(items.len());
            async move {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                Ok(items.into_iter().map(|i| i * 10).collect())
            }
        });
        let first = tokio::spawn({
            let b = batcher.clone();
            async move { b.submit(1).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let rest: Vec<_> = (2..=5)
            .map(|i| {
                let b = batcher.clone();
                tokio::spawn(async move { b.submit(i).await })
            })
            .collect();
        assert_eq!(first.await.unwrap().unwrap(), 10);
        for (i, h) in (2..=5).zip(rest) {
            assert_eq!(
                h.await.unwrap().unwrap(),
                i * 10,
                "each caller gets its own answer"
            );
        }
        assert_eq!(
            *sizes.lock().unwrap(),
            vec![1, 4],
            "a lone item goes at once; the rest queue behind it"
        );
    }

    #[tokio::test]
    async fn a_batch_never_exceeds_max() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let batcher: Batcher<u32, ()> = Batcher::spawn(3, move |items: Vec<u32>| {
            seen.lock().unwrap().push(items.len());
            async move { Ok(items.iter().map(|_| ()).collect()) }
        });
        let all: Vec<_> = (0..7)
            .map(|i| {
                let b = batcher.clone();
                tokio::spawn(async move { b.submit(i).await })
            })
            .collect();
        for h in all {
            h.await.unwrap().unwrap();
        }
        assert!(sizes.lock().unwrap().iter().all(|n| *n <= 3), "{sizes:?}");
    }
}
