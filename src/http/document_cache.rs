//! Parsed documents by their text: clients send the same few operations over
//! and over, so each is parsed and checked once, not on every request.
//!
//! Only documents that parsed and passed every limit in `document` are kept,
//! only small ones, and only so many: a client sending endless distinct
//! documents fills the cache, which is then emptied, and parses as before.
//!
//! Validation against the schema depends on the document, the operation
//! chosen and the variables' values alone. A kept document records the
//! operation it passed validation with when sent without variables; sent so
//! again, it needs only the limits checked (`graphql::schema_for_valid_documents`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use async_graphql::parser::types::ExecutableDocument;

use crate::graphql::document;

/// Most documents kept.
const CAPACITY: usize = 512;
/// Largest document kept; real operations are far smaller.
const MAX_BYTES: usize = 4 * 1024;

/// The cache, shared by every request.
#[derive(Debug, Default)]
pub struct DocumentCache {
    documents: Mutex<HashMap<Arc<str>, Arc<KeptDocument>>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// A kept document, and the operation it passed validation with when sent
/// without variables, once it has.
#[derive(Debug)]
pub struct KeptDocument {
    document: ExecutableDocument,
    validated: OnceLock<Option<String>>,
}

impl KeptDocument {
    /// Whether the document passed validation as `operation`, sent without
    /// variables.
    pub fn validated_as(&self, operation: Option<&str>) -> bool {
        self.validated
            .get()
            .is_some_and(|validated| validated.as_deref() == operation)
    }

    /// Records that the document passed validation as `operation`, sent
    /// without variables.
    pub fn passed_validation_as(&self, operation: Option<&str>) {
        let _ = self.validated.set(operation.map(str::to_owned));
    }
}

impl DocumentCache {
    /// The document `text` parses to, checked against every limit, from the
    /// cache or freshly prepared (and then kept), and its entry once kept.
    pub async fn prepare(
        &self,
        text: String,
    ) -> (String, document::Prepared, Option<Arc<KeptDocument>>) {
        if let Some(kept) = self.get(&text) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            let document = ExecutableDocument::clone(&kept.document);
            return (text, Ok(Some(document)), Some(kept));
        }
        let misses = self.misses.fetch_add(1, Ordering::Relaxed) + 1;
        let (text, prepared) = document::prepare(text).await;
        let mut kept = None;
        if let Ok(Some(document)) = &prepared
            && text.len() <= MAX_BYTES
        {
            kept = Some(self.keep(&text, document));
        }
        tracing::debug!(
            hits = self.hits.load(Ordering::Relaxed),
            misses,
            "document cache miss"
        );
        (text, prepared, kept)
    }

    fn get(&self, text: &str) -> Option<Arc<KeptDocument>> {
        self.lock().get(text).cloned()
    }

    fn keep(&self, text: &str, document: &ExecutableDocument) -> Arc<KeptDocument> {
        let kept = Arc::new(KeptDocument {
            document: document.clone(),
            validated: OnceLock::new(),
        });
        let mut documents = self.lock();
        if documents.len() >= CAPACITY {
            documents.clear();
        }
        documents.insert(Arc::from(text), Arc::clone(&kept));
        kept
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Arc<KeptDocument>>> {
        self.documents
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_document_sent_again_is_a_hit_and_the_cache_stays_bounded() {
        let cache = DocumentCache::default();
        for _ in 0..3 {
            let (_, prepared, _) = cache.prepare("{ __typename }".to_owned()).await;
            assert!(matches!(prepared, Ok(Some(_))));
        }
        assert_eq!(cache.hits.load(Ordering::Relaxed), 2);
        assert_eq!(cache.misses.load(Ordering::Relaxed), 1);

        for alias in 0..CAPACITY * 2 {
            let (_, prepared, _) = cache.prepare(format!("{{ a{alias}: __typename }}")).await;
            assert!(matches!(prepared, Ok(Some(_))));
        }
        assert!(cache.lock().len() <= CAPACITY);
    }

    #[tokio::test]
    async fn documents_over_a_limit_or_not_parsed_are_not_kept() {
        let cache = DocumentCache::default();
        let _ = cache.prepare("{ a(x: [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]) }".to_owned()).await;
        let _ = cache.prepare("{ not valid".to_owned()).await;
        assert!(cache.lock().is_empty());
    }
}
