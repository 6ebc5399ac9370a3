//! PLACEHOLDER: the seeded pseudo-random stream.
