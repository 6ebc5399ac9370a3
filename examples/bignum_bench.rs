//! Measures the big-integer operations facto depends on, through `facto::bignum`:
//! n! as a 4-ary product tree (leaves of 4 consecutive integers), conversion to decimal, and
//! the byte round trip used on the wire.
//!
//! `cargo run --release --example bignum_bench -- [N]` (default 1000000)

use facto::bignum::Big;
use std::time::Instant;

fn main() {
    let n: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let start = Instant::now();
    let mut level: Vec<Big> = (2..=n)
        .collect::<Vec<u64>>()
        .chunks(4)
        .map(|c| Big::product(&c.iter().map(|&v| Big::from(v)).collect::<Vec<_>>()))
        .collect();
    while level.len() > 1 {
        level = level.chunks(4).map(Big::product).collect();
    }
    let result = level.pop().unwrap_or_else(Big::one);
    let compute = start.elapsed();

    let start = Instant::now();
    let bytes = result.to_bytes();
    let back = Big::from_bytes(&bytes);
    let round_trip = start.elapsed();
    assert_eq!(back, result);

    let start = Instant::now();
    let decimal = result.to_decimal();
    let to_decimal = start.elapsed();

    println!("{n}!: {} digits, {} bytes", decimal.len(), bytes.len());
    println!("product tree:       {:>8.3} s", compute.as_secs_f64());
    println!("to decimal:         {:>8.3} s", to_decimal.as_secs_f64());
    println!("bytes round trip:   {:>8.3} s", round_trip.as_secs_f64());
}
