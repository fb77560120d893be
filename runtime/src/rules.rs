//! Keeping a room's rules in its store. The rules come from one of two
//! places ([`RulesFrom`]):
//!
//! * **flags** (running without the operator): every broker and dispatcher
//!   carries the rules it was started with. It writes them once Redis
//!   answers, and again whenever it finds the room without rules: a Redis
//!   that restarted without its data would otherwise refuse every join for
//!   good. A lower revision never replaces a higher one (`configure`), so a
//!   pod left over from an earlier rollout cannot put back older rules; and
//!   a room the operator purged on deletion is not restored by its pods
//!   still running.
//! * **store** (under the operator): the operator writes the rules, and
//!   writes them again when they are lost. The process only reads them, so
//!   a change of rules needs no new process; until the rules are there the
//!   process is not ready.
//!
//! Either way every process follows the rules in the store, which change
//! live (the room's change stream says when).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::queue::{QueueError, Result, RoomConfig, Store};

/// Where a process takes the room's rules from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RulesFrom {
    /// Its own flags and variables, written to the store.
    Flags,
    /// The store, where the operator writes them.
    Store,
}

pub struct RoomRules {
    store: Arc<dyn Store>,
    /// The rules this process writes; `None` when it only follows them.
    rules: Option<RoomConfig>,
    /// This process has written its rules once (they may since be gone).
    written: AtomicBool,
}

impl RoomRules {
    pub fn new(store: Arc<dyn Store>, rules: RoomConfig) -> Arc<Self> {
        Arc::new(RoomRules {
            store,
            rules: Some(rules),
            written: AtomicBool::new(false),
        })
    }

    /// Rules another party (the operator) writes; this process only reads.
    pub fn following(store: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(RoomRules {
            store,
            rules: None,
            written: AtomicBool::new(false),
        })
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The rules in force in the store. Writes this process's rules first if
    /// it has not yet, or if the room has none; fails only when the store
    /// does. Concurrent callers may both write: the same rules, harmlessly.
    pub async fn ensure(&self) -> Result<RoomConfig> {
        let Some(rules) = &self.rules else {
            return self.store.config().await?.ok_or(QueueError::NotConfigured);
        };
        if !self.written.load(Ordering::Acquire) {
            self.write(rules).await?;
            self.written.store(true, Ordering::Release);
        } else if let Some(rules) = self.store.config().await? {
            return Ok(rules);
        } else {
            tracing::warn!(
                "the room's rules are gone from the store (did Redis lose its data?); writing them again"
            );
            self.store.restore(rules).await?;
        }
        self.store.config().await?.ok_or(QueueError::NotConfigured)
    }

    async fn write(&self, rules: &RoomConfig) -> Result<()> {
        if !self.store.configure(rules).await? {
            tracing::warn!(
                revision = rules.revision,
                "the room has rules of a newer revision; keeping them"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::queue::MemoryStore;

    fn rules(capacity: u64, revision: u64) -> RoomConfig {
        RoomConfig {
            revision,
            ..RoomConfig::for_tests(capacity, 60_000)
        }
    }

    #[tokio::test]
    async fn rules_are_written_once_and_again_when_lost() {
        let memory = Arc::new(MemoryStore::new());
        let store: Arc<dyn Store> = Arc::clone(&memory) as Arc<dyn Store>;
        let keeper = RoomRules::new(Arc::clone(&store), rules(5, 1));
        assert_eq!(keeper.ensure().await.unwrap().capacity, 5);
        // Rules another process wrote since are left alone while present...
        store.configure(&rules(7, 1)).await.unwrap();
        assert_eq!(keeper.ensure().await.unwrap().capacity, 7);
        // ...and ours come back when the store lost them.
        memory.lose_everything();
        assert_eq!(keeper.ensure().await.unwrap().capacity, 5);
    }

    #[tokio::test]
    async fn a_purged_room_is_not_restored_until_a_process_starts_for_it() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let leftover = RoomRules::new(Arc::clone(&store), rules(5, 3));
        leftover.ensure().await.unwrap();
        store.purge().await.unwrap();
        assert_eq!(leftover.ensure().await, Err(QueueError::NotConfigured));
        assert_eq!(store.config().await.unwrap(), None);
        // The room made again starts over, at its own revision.
        let recreated = RoomRules::new(Arc::clone(&store), rules(9, 1));
        assert_eq!(recreated.ensure().await.unwrap(), rules(9, 1));
        assert_eq!(leftover.ensure().await.unwrap(), rules(9, 1));
    }

    #[tokio::test]
    async fn a_follower_only_reads_the_rules() {
        let memory = Arc::new(MemoryStore::new());
        let store: Arc<dyn Store> = Arc::clone(&memory) as Arc<dyn Store>;
        let follower = RoomRules::following(Arc::clone(&store));
        assert_eq!(follower.ensure().await, Err(QueueError::NotConfigured));
        assert_eq!(store.config().await.unwrap(), None);
        store.configure(&rules(7, 4)).await.unwrap();
        assert_eq!(follower.ensure().await.unwrap(), rules(7, 4));
        // Lost rules are the operator's to write again, not the follower's.
        memory.lose_everything();
        assert_eq!(follower.ensure().await, Err(QueueError::NotConfigured));
    }

    #[tokio::test]
    async fn newer_rules_are_kept() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        store.configure(&rules(9, 2)).await.unwrap();
        let keeper = RoomRules::new(Arc::clone(&store), rules(5, 1));
        assert_eq!(keeper.ensure().await.unwrap(), rules(9, 2));
    }
}
