//! Pieces shared by several pipeline stages that belong to none of them (after Vector's
//! `src/common/`). Layer 2 in the pipeline order: it may import `config` and the ground floor,
//! never a source, the engine, a sink or a command.

pub mod mqtt;
