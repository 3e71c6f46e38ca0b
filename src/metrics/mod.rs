//! Rolling metrics: the pure roll-up of `agent_events` into `agent_metrics`
//! windows (`rollup`) and the component that feeds and writes it (`service`).

pub mod rollup;
pub mod service;
