//! The SlotCon trainer (issue 5): ResNet backbone, projector, semantic grouping, slot
//! contrast, EMA teacher, LARS and schedules, on Burn 0.22.
//!
//! This crate is empty until that issue lands; it is the only crate that will depend on
//! burn, and it never decodes images itself (the `augment` loader feeds it).
