//! Readiness of the dependencies, as last observed by the components.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// One dependency's state.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct DependencyState {
    /// Usable right now.
    pub ready: bool,
    /// Why not (or what was seen).
    pub detail: String,
}

/// Shared readiness board: components report, `/readyz` reads.
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    /// Dependency name (deephaven, tables, kafka) to state.
    inner: Arc<Mutex<BTreeMap<&'static str, DependencyState>>>,
}

impl Readiness {
    /// Declares a dependency that must be ready, initially not ready.
    pub fn require(&self, name: &'static str) {
        self.set(name, false, "not checked yet");
    }

    /// Records the state of `name`.
    pub fn set(&self, name: &'static str, ready: bool, detail: impl Into<String>) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.insert(name, DependencyState { ready, detail: detail.into() });
        metrics::gauge!("dhbus_dependency_ready", "dependency" => name).set(if ready { 1.0 } else { 0.0 });
    }

    /// Whether every declared dependency is ready, and the details.
    pub fn report(&self) -> (bool, BTreeMap<&'static str, DependencyState>) {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone();
        (g.values().all(|d| d.ready), g)
    }
}
