//! Embedded market-data sources that publish through the same sequencer as publishers.

pub mod synthetic;
