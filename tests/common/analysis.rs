//! What the canary-analysis test needs besides pinserve: a real Prometheus scraping pinserve
//! processes ([`prometheus`]), and Argo Rollouts' `successCondition`s evaluated as its
//! controller evaluates them ([`condition`]).

pub mod condition;
pub mod prometheus;
