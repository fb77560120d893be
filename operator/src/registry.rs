//! What the operator keeps per room between reconciles: its memory (keyed
//! by uid) and the Redis connections (keyed by URL and event id, shared by
//! the rooms that point at them). A room's entries go when the room goes,
//! and a connection goes when no room points at it any more.
//!
//! No lock is held across a connect: a Redis that does not answer holds up
//! only the rooms that use it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

/// Where a room's state lives: (Redis URL, event id).
pub type Target = (String, String);

pub struct Registry<M, S> {
    rooms: Mutex<HashMap<String, M>>,
    stores: Mutex<Stores<S>>,
}

struct Stores<S> {
    by_target: HashMap<Target, Arc<S>>,
    /// The target each room (uid) last asked for.
    targets: HashMap<String, Target>,
}

impl<S> Stores<S> {
    /// Records that `uid` now uses `target`; the connection it used before
    /// goes if no other room uses it.
    fn point(&mut self, uid: &str, target: &Target) {
        if self.targets.get(uid) == Some(target) {
            return;
        }
        if let Some(old) = self.targets.insert(uid.to_owned(), target.clone()) {
            self.release(&old);
        }
    }

    fn release(&mut self, target: &Target) {
        if !self.targets.values().any(|t| t == target) {
            self.by_target.remove(target);
        }
    }
}

impl<M, S> Default for Registry<M, S> {
    fn default() -> Self {
        Registry {
            rooms: Mutex::new(HashMap::new()),
            stores: Mutex::new(Stores {
                by_target: HashMap::new(),
                targets: HashMap::new(),
            }),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl<M: Default, S> Registry<M, S> {
    /// Runs `f` on the memory of the room `uid` (made on first use).
    pub fn memory<T>(&self, uid: &str, f: impl FnOnce(&mut M) -> T) -> T {
        f(lock(&self.rooms).entry(uid.to_owned()).or_default())
    }

    /// The connection to `target` for the room `uid`: the one in place, or
    /// a new one from `connect`, run without holding any lock. Two rooms
    /// connecting to the same target at once may both connect; the first
    /// to finish is kept.
    pub async fn store<E>(
        &self,
        uid: &str,
        target: Target,
        connect: impl Future<Output = Result<S, E>>,
    ) -> Result<Arc<S>, E> {
        {
            let mut stores = lock(&self.stores);
            stores.point(uid, &target);
            if let Some(store) = stores.by_target.get(&target) {
                return Ok(Arc::clone(store));
            }
        }
        let fresh = Arc::new(connect.await?);
        let mut stores = lock(&self.stores);
        stores.point(uid, &target);
        Ok(Arc::clone(stores.by_target.entry(target).or_insert(fresh)))
    }

    /// Drops what is kept for the room `uid`: its memory, and its
    /// connection unless another room uses it.
    pub fn forget(&self, uid: &str) {
        lock(&self.rooms).remove(uid);
        let mut stores = lock(&self.stores);
        if let Some(old) = stores.targets.remove(uid) {
            stores.release(&old);
        }
    }

    /// Forgets every room for which `live` is false.
    pub fn retain(&self, live: impl Fn(&str) -> bool) {
        let mut gone: Vec<String> = lock(&self.rooms)
            .keys()
            .filter(|uid| !live(uid))
            .cloned()
            .collect();
        gone.extend(
            lock(&self.stores)
                .targets
                .keys()
                .filter(|uid| !live(uid))
                .cloned(),
        );
        for uid in gone {
            self.forget(&uid);
        }
    }

    /// Rooms with a memory, and open connections.
    pub fn sizes(&self) -> (usize, usize) {
        (lock(&self.rooms).len(), lock(&self.stores).by_target.len())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    use std::time::Duration;

    use super::*;

    fn target(url: &str, event: &str) -> Target {
        (url.to_owned(), event.to_owned())
    }

    async fn ready(n: u32) -> Result<u32, Infallible> {
        Ok(n)
    }

    #[tokio::test]
    async fn rooms_share_a_connection_and_it_goes_with_the_last_of_them() {
        let registry = Registry::<u32, u32>::default();
        let a = registry
            .store("a", target("redis://r/", "e"), ready(1))
            .await
            .unwrap();
        let b = registry
            .store("b", target("redis://r/", "e"), ready(2))
            .await
            .unwrap();
        assert_eq!((*a, *b), (1, 1), "one connection per (url, event id)");
        registry.memory("a", |m| *m = 7);
        registry.memory("b", |m| *m = 8);
        assert_eq!(registry.sizes(), (2, 1));
        registry.forget("a");
        assert_eq!(registry.memory("b", |m| *m), 8);
        assert_eq!(registry.sizes(), (1, 1), "b still uses the connection");
        registry.forget("b");
        assert_eq!(registry.sizes(), (0, 0));
        registry.forget("b");
        assert_eq!(registry.sizes(), (0, 0));
    }

    #[tokio::test]
    async fn a_room_pointed_elsewhere_drops_its_old_connection() {
        let registry = Registry::<(), u32>::default();
        registry
            .store("a", target("redis://old/", "e"), ready(1))
            .await
            .unwrap();
        let moved = registry
            .store("a", target("redis://new/", "e"), ready(2))
            .await
            .unwrap();
        assert_eq!(*moved, 2);
        assert_eq!(registry.sizes().1, 1, "the old connection is gone");
        let renamed = registry
            .store("a", target("redis://new/", "other"), ready(3))
            .await
            .unwrap();
        assert_eq!(*renamed, 3);
        assert_eq!(registry.sizes().1, 1);
        // Pointed at an unreachable Redis: the old connection goes too.
        let failed: Result<_, &str> = registry
            .store("a", target("redis://down/", "e"), async { Err("down") })
            .await;
        assert!(failed.is_err());
        assert_eq!(registry.sizes().1, 0);
        let again = registry
            .store("a", target("redis://new/", "e"), ready(4))
            .await
            .unwrap();
        assert_eq!(*again, 4, "a fresh connection");
    }

    #[tokio::test]
    async fn rooms_gone_from_the_cluster_are_forgotten() {
        let registry = Registry::<u32, u32>::default();
        for uid in ["a", "b", "c"] {
            registry
                .store(uid, target("redis://r/", uid), ready(0))
                .await
                .unwrap();
            registry.memory(uid, |m| *m = 1);
        }
        registry.memory("d", |m| *m = 1);
        registry.retain(|uid| uid == "b");
        assert_eq!(registry.sizes(), (1, 1));
        assert_eq!(registry.memory("b", |m| *m), 1);
    }

    #[tokio::test]
    async fn a_redis_that_never_answers_holds_up_no_other_room() {
        // A server that accepts connections and never says a word.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{}/", silent.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        let server = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = silent.accept().await {
                counter.fetch_add(1, Relaxed);
                held.push(socket);
            }
        });
        let registry = Arc::new(Registry::<(), u32>::default());
        let stuck = {
            let registry = Arc::clone(&registry);
            let url = url.clone();
            tokio::spawn(async move {
                registry
                    .store("stuck", target(&url, "e"), async {
                        // As the controller connects: a PING that gets no answer.
                        let store = usher_runtime::queue::RedisStore::connect(&url, "e").await;
                        Ok::<_, Infallible>(u32::from(store.is_ok()))
                    })
                    .await
            })
        };
        while accepted.load(Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let started = std::time::Instant::now();
        let other = tokio::time::timeout(
            Duration::from_millis(500),
            registry.store("other", target("redis://elsewhere/", "e"), ready(9)),
        )
        .await
        .expect("the other room's lookup must not wait for the silent Redis")
        .unwrap();
        assert_eq!(*other, 9);
        assert!(started.elapsed() < Duration::from_millis(500));
        // The same room's next lookup is not held up either.
        registry
            .store("other", target("redis://elsewhere/", "e"), ready(10))
            .await
            .unwrap();
        assert!(!stuck.is_finished(), "the silent Redis is still connecting");
        stuck.abort();
        server.abort();
    }
}
