//! Many accounts in one server: which account's service answers a path. The table is built
//! whole and swapped whole, so a request sees one consistent set of accounts, and a push in
//! flight keeps the service it started with (its account may be gone from the next table).
//! Paths match exactly; any other path goes to the fallback service, which answers `/`,
//! `/healthz` and 404.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::server::routes::Service;

/// One set of accounts: each account's service by its path, in the file's order.
pub struct Table {
    by_path: HashMap<String, Arc<Service>>,
    /// In the order they were given (the accounts file's order).
    services: Vec<Arc<Service>>,
    /// Answers the paths that are no account's.
    fallback: Arc<Service>,
}

impl Table {
    /// The table of `services` (at least one; their paths differ), with `fallback` for the
    /// paths no account has.
    pub fn new(services: Vec<Arc<Service>>, fallback: Arc<Service>) -> Table {
        let by_path = services
            .iter()
            .map(|s| (s.pipeline.account().path.clone(), Arc::clone(s)))
            .collect();
        Table {
            by_path,
            services,
            fallback,
        }
    }

    /// The account at `path`, else the fallback.
    pub fn service(&self, path: &str) -> &Arc<Service> {
        self.by_path.get(path).unwrap_or(&self.fallback)
    }

    /// Every account's service, in order.
    pub fn services(&self) -> &[Arc<Service>] {
        &self.services
    }

    pub fn fallback(&self) -> &Arc<Service> {
        &self.fallback
    }
}

/// The table in force, swapped by a reload of the accounts file.
pub struct Router {
    current: RwLock<Arc<Table>>,
}

impl Router {
    pub fn new(table: Table) -> Router {
        Router {
            current: RwLock::new(Arc::new(table)),
        }
    }

    pub fn current(&self) -> Arc<Table> {
        match self.current.read() {
            Ok(guard) => Arc::clone(&guard),
            // A writer only swaps an Arc; a poisoned lock still holds a whole table.
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    pub fn replace(&self, table: Table) {
        let new = Arc::new(table);
        match self.current.write() {
            Ok(mut guard) => *guard = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
    }
}
