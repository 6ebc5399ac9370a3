//! The primes a prime-swing plan needs: which primes divide swing(m), and how often, and how
//! many they are without listing them (a plan is built on every node that checks a message,
//! so it must not sieve up to n).
//!
//! swing(m) = m! / (⌊m/2⌋!)² = ∏ p^e over the primes p ≤ m, with e = Σᵢ (⌊m / pⁱ⌋ mod 2)
//! (Luschny). A prime above √m has e = ⌊m/p⌋ mod 2, so p^e ≤ m always: every factor is one
//! machine word, as the integers of a range are.

/// The exponent of the prime `p` in swing(m).
pub fn swing_exponent(m: u64, p: u64) -> u32 {
    let (mut q, mut e) = (m, 0);
    while q >= p {
        q /= p;
        e += (q & 1) as u32;
    }
    e
}

/// Every prime up to `limit`, in order, by a sieve over odd numbers in segments (its memory is
/// one segment and the primes up to √limit).
pub fn for_each_prime(limit: u64, mut f: impl FnMut(u64)) {
    if limit < 2 {
        return;
    }
    f(2);
    let root = isqrt(limit);
    let base: Vec<u64> = small_primes(root).into_iter().filter(|&p| p > 2).collect();
    const SEGMENT_ODDS: u64 = 1 << 18;
    let mut low = 3;
    let mut composite = vec![false; SEGMENT_ODDS as usize];
    while low <= limit {
        // Odd numbers low, low + 2, ... up to high.
        let high = (low + 2 * (SEGMENT_ODDS - 1)).min(limit);
        let count = ((high - low) / 2 + 1) as usize;
        composite[..count].fill(false);
        for &p in base.iter().take_while(|&&p| p * p <= high) {
            let mut multiple = (p * p).max(low.div_ceil(p) * p);
            if multiple.is_multiple_of(2) {
                multiple += p;
            }
            while multiple <= high {
                composite[((multiple - low) / 2) as usize] = true;
                multiple += 2 * p;
            }
        }
        for (i, _) in composite[..count].iter().enumerate().filter(|(_, &c)| !c) {
            f(low + 2 * i as u64);
        }
        low = high + 2;
    }
}

/// The primes up to `limit` (small limits: a plain sieve).
fn small_primes(limit: u64) -> Vec<u64> {
    let limit = limit as usize;
    let mut composite = vec![false; limit + 1];
    let mut primes = Vec::new();
    for i in 2..=limit {
        if !composite[i] {
            primes.push(i as u64);
            for multiple in (i * i..=limit).step_by(i) {
                composite[multiple] = true;
            }
        }
    }
    primes
}

/// ⌊√x⌋.
pub fn isqrt(x: u64) -> u64 {
    let square_above = |r: u64| r.checked_mul(r).is_none_or(|square| square > x);
    let mut r = (x as f64).sqrt() as u64;
    while square_above(r) {
        r -= 1;
    }
    while !square_above(r + 1) {
        r += 1;
    }
    r
}

/// π(v), the count of primes up to v, for every v ≤ n/⌊√n⌋ and every v = ⌊n/i⌋: Lucy's
/// algorithm, O(n^¾) steps and O(√n) memory (about a millisecond at n = 10⁸).
pub struct PrimeCounts {
    n: u64,
    /// π(v) for v in 0..=n/⌊√n⌋.
    small: Vec<u64>,
    /// π(⌊n/i⌋) for i in 1..=⌊√n⌋ (index 0 unused).
    large: Vec<u64>,
    /// The primes up to ⌊√n⌋.
    small_primes: Vec<u64>,
}

impl PrimeCounts {
    pub fn new(n: u64) -> PrimeCounts {
        let root = isqrt(n).max(1);
        let small_max = n / root;
        // Before any sieving: every integer from 2 up to v counts.
        let mut small: Vec<u64> = (0..=small_max).map(|v| v.saturating_sub(1)).collect();
        let mut large: Vec<u64> = (0..=root).map(|i| n.checked_div(i).map_or(0, |v| v.saturating_sub(1))).collect();
        for p in 2..=root {
            if small[p as usize] == small[p as usize - 1] {
                continue;
            }
            // Strike the integers whose least prime factor is p from every count above p².
            let below = small[p as usize - 1];
            let square = p * p;
            for i in 1..=root.min(n / square) {
                let d = i * p;
                let struck = if d <= root { large[d as usize] } else { small[(n / d) as usize] };
                large[i as usize] -= struck - below;
            }
            for v in (square..=small_max).rev() {
                small[v as usize] -= small[(v / p) as usize] - below;
            }
        }
        PrimeCounts { n, small, large, small_primes: small_primes(root) }
    }

    /// π(v); `v` must be at most n/⌊√n⌋ or of the form ⌊n/i⌋.
    pub fn pi(&self, v: u64) -> u64 {
        match self.small.get(v as usize) {
            Some(&count) => count,
            None => {
                let i = self.n / v;
                debug_assert_eq!(self.n / i, v, "{v} is not ⌊{}/i⌋", self.n);
                self.large[i as usize]
            }
        }
    }

    /// How many primes divide swing(m), for m = ⌊n/2^k⌋: those up to √m one by one, those
    /// above by the ranges (⌊m/(q+1)⌋, ⌊m/q⌋] of odd q, where ⌊m/p⌋ = q.
    pub fn swing_factors(&self, m: u64) -> u64 {
        debug_assert!(m <= self.n);
        let root = isqrt(m);
        let below_root = self.small_primes.iter().take_while(|&&p| p <= root);
        let mut count = below_root.filter(|&&p| swing_exponent(m, p) > 0).count() as u64;
        let mut q = 1;
        while m / q > root {
            let low = (m / (q + 1)).max(root);
            count += self.pi(m / q) - self.pi(low);
            q += 2;
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sieve_finds_the_primes() {
        let mut primes = Vec::new();
        for_each_prime(100, |p| primes.push(p));
        assert_eq!(primes, small_primes(100));
        assert_eq!(primes.len(), 25);
        let mut count = 0;
        for_each_prime(2_000_003, |_| count += 1);
        assert_eq!(count, 148_934, "π(2,000,003), across segments");
        assert_eq!(small_primes(2_000_003).len(), 148_934);
    }

    #[test]
    fn prime_counts_agree_with_the_sieve() {
        for n in [1, 2, 3, 10, 97, 100, 1_000, 65_536, 1_000_003] {
            let counts = PrimeCounts::new(n);
            let primes = small_primes(n);
            let pi = |v: u64| primes.iter().take_while(|&&p| p <= v).count() as u64;
            for i in 1..=isqrt(n).max(1) {
                assert_eq!(counts.pi(n / i), pi(n / i), "π({}) for n = {n}", n / i);
            }
            for v in 0..=(n / isqrt(n).max(1)) {
                assert_eq!(counts.pi(v), pi(v), "π({v}) for n = {n}");
            }
        }
    }

    #[test]
    fn swing_factors_are_counted_exactly() {
        for n in [8_192, 10_000, 99_999, 1_000_003] {
            let counts = PrimeCounts::new(n);
            let mut m = n;
            while m >= 2 {
                let mut listed = 0;
                for_each_prime(m, |p| listed += u64::from(swing_exponent(m, p) > 0));
                assert_eq!(counts.swing_factors(m), listed, "swing({m}), n = {n}");
                m /= 2;
            }
        }
    }

    #[test]
    fn exponents_make_the_swing() {
        // swing(10) = 10! / (5!)² = 252 = 2² · 3² · 7.
        let factors: Vec<(u64, u32)> =
            [2, 3, 5, 7].iter().map(|&p| (p, swing_exponent(10, p))).filter(|&(_, e)| e > 0).collect();
        assert_eq!(factors, vec![(2, 2), (3, 2), (7, 1)]);
        assert_eq!(isqrt(u64::MAX), u32::MAX as u64);
        assert_eq!((isqrt(15), isqrt(16)), (3, 4));
    }
}
