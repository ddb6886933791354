//! Optimisation: LARS and the teacher's EMA.

pub mod ema;
pub mod lars;
pub mod native;

pub use ema::ema_update;
pub use lars::Lars;
