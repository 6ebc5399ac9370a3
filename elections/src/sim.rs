//! PLACEHOLDER: the seeded network simulator.
