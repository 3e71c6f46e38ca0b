//! Operator surfaces of `dhbus run`: the Prometheus endpoint, `/healthz`
//! (process alive) and `/readyz` (dependencies usable).

pub mod http;
pub mod readiness;
