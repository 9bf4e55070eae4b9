//! HJ 212 data loggers (数采仪) of pollution-source outlets: the messages they push over TCP to
//! the environmental bureau's platform, and which the agent receives as a second platform.
//! HJ 212-2017 and its predecessor HJ/T 212-2005 share the framing; they differ in the
//! pollutant codes and the `Flag` field.
//!
//! Receiving is the whole job: the agent never commands a logger. What it sends back are the
//! protocol's acknowledgements (9014, "data received") that a logger asks for in its `Flag`;
//! they change nothing on the logger but its retry queue.
//!
//! The pieces follow the S7 source's shape: [`packet`] checks the framing and CRC, parses the
//! data segment (QN, ST, CN, PW, MN, Flag, PNUM/PNO, CP with its values and data flags),
//! merges split packets and builds acknowledgements, all without I/O; [`codes`] names the
//! system and command codes, the data flags and the common pollutants with their units;
//! [`config`] is the `[[hj212]]` section and [`listen`] the listener (bounds per peer, the
//! password check per logger, MN to outlet, acknowledgements).

pub mod codes;
pub mod config;
pub mod listen;
pub mod packet;
