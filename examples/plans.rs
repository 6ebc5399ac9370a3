//! Which plan computes n! with the least work, when every operation multiplies at most four
//! values (a squaring is one): today's 4-ary tree over 2..=n, the tree over odd numbers with
//! the power of two split off, and Luschny's prime swing, timed in one thread against the
//! big-integer crate's own factorial. An experiment to choose the cluster's next plan, so it
//! uses the crate's numbers directly, and checks every answer against the crate's.
//!
//! `cargo run --release --example plans -- [N...]` (default 1000000 10000000)

use malachite_base::num::arithmetic::traits::{Factorial, Pow, Square};
use malachite_nz::natural::Natural;
use std::time::Instant;

/// The product of `values` as a tree of operations of at most four values each; returns it
/// and how many operations it took.
fn product4(mut values: Vec<Natural>, ops: &mut u64) -> Natural {
    if values.is_empty() {
        return Natural::from(1u32);
    }
    while values.len() > 1 {
        let mut next = Vec::with_capacity(values.len().div_ceil(4));
        let mut rest = values.into_iter();
        loop {
            let group: Vec<Natural> = rest.by_ref().take(4).collect();
            if group.is_empty() {
                break;
            }
            *ops += 1;
            next.push(pairwise(group));
        }
        values = next;
    }
    values.pop().unwrap_or(Natural::from(1u32))
}

/// Up to four values, neighbours first (as `facto::bignum::Big::product` does).
fn pairwise(mut group: Vec<Natural>) -> Natural {
    while group.len() > 1 {
        group = group.chunks(2).map(|pair| pair.iter().product()).collect();
    }
    group.pop().unwrap_or(Natural::from(1u32))
}

/// Today's plan: every integer in 2..=n, in one tree.
fn tree(n: u64, ops: &mut u64) -> Natural {
    product4((2..=n).map(Natural::from).collect(), ops)
}

/// The power of two split off: n! = 2^(n - popcount n) · ∏ₖ Oₖ, where Oₖ is the product of
/// the odd numbers up to n >> k; each Oₖ is the running product of the odd numbers in
/// (n >> (k+1), n >> k], built from the top, so every odd number is multiplied once.
fn odd_split(n: u64, ops: &mut u64) -> Natural {
    let mut running = Natural::from(1u32);
    let mut result = Natural::from(1u32);
    for k in (0..64).rev() {
        let (lo, hi) = (n >> (k + 1), n >> k);
        if hi < 3 {
            continue;
        }
        let odd: Vec<Natural> = ((lo + 1) | 1..=hi).step_by(2).map(Natural::from).collect();
        running = product4(vec![running, product4(odd, ops)], ops);
        result = product4(vec![result, running.clone()], ops);
    }
    *ops += 1;
    result << (n - u64::from(n.count_ones()))
}

/// Luschny's prime swing: n! = ((n/2)!)² · swing(n), swing(n) = ∏ p^e(p) over the primes up
/// to n, e(p) = Σᵢ (⌊n / pⁱ⌋ mod 2).
fn swing_factorial(n: u64, primes: &[u64], ops: &mut u64) -> Natural {
    if n < 2 {
        return Natural::from(1u32);
    }
    let half = swing_factorial(n / 2, primes, ops);
    let powers: Vec<Natural> = primes
        .iter()
        .take_while(|&&p| p <= n)
        .filter_map(|&p| {
            let (mut q, mut e) = (n, 0u64);
            while q > 0 {
                q /= p;
                e += q & 1;
            }
            (e > 0).then(|| Natural::from(p).pow(e))
        })
        .collect();
    let swing = product4(powers, ops);
    *ops += 2;
    product4(vec![half.square(), swing], ops)
}

fn primes_up_to(n: u64) -> Vec<u64> {
    let mut composite = vec![false; n as usize + 1];
    let mut primes = Vec::new();
    for i in 2..=n as usize {
        if !composite[i] {
            primes.push(i as u64);
            (i * i..=n as usize).step_by(i).for_each(|j| composite[j] = true);
        }
    }
    primes
}

fn main() {
    let ns: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let ns = if ns.is_empty() { vec![1_000_000, 10_000_000] } else { ns };
    for n in ns {
        let started = Instant::now();
        let expected = Natural::factorial(n);
        let builtin_s = started.elapsed().as_secs_f64();
        println!("{n}!: the crate's own factorial {builtin_s:.3} s");
        let primes = primes_up_to(n);
        type Plan<'a> = (&'a str, Box<dyn Fn(&mut u64) -> Natural + 'a>);
        let plans: Vec<Plan> = vec![
            ("4-ary tree over 2..=n (today)", Box::new(|ops| tree(n, ops))),
            ("odd numbers, power of two split off", Box::new(|ops| odd_split(n, ops))),
            ("prime swing", Box::new(|ops| swing_factorial(n, &primes, ops))),
        ];
        for (name, plan) in plans {
            let (started, mut ops) = (Instant::now(), 0u64);
            let product = plan(&mut ops);
            let s = started.elapsed().as_secs_f64();
            assert!(product == expected, "{name}: a wrong {n}!");
            println!("  {name:<38} {s:>8.3} s  {:>5.2}x the crate's  {ops:>9} operations", s / builtin_s);
        }
    }
}
