//! Checks of products that trust no worker and no peer: a product's residue modulo a prime
//! chosen at random by the checker must equal the product of its operands' residues (for a
//! task that starts from integers, of the integers; for a swing, m! / (⌊m/2⌋!)²). A corrupted or forged product passes
//! only if its difference from the true one is a multiple of that prime, which a forger does
//! not know; and a product of the wrong size is refused before any residue is taken.
//!
//! Cost (1,000,000!, measured in docs/BENCHMARKS.md): one pass over every operand and product
//! byte, plus one modular multiplication per integer of the leaf tasks (m for swing(m)).

use crate::bignum::Big;
use crate::coordinator::{OpId, OpRef, Plan, Product, WorkItem};

/// Residues modulo one prime of 62 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    prime: u64,
    /// -prime⁻¹ mod 2⁶⁴, for Montgomery reduction (a long product's multiplications are a
    /// few nanoseconds each instead of a 128-bit division).
    neg_inverse: u64,
    /// 2⁶⁴ mod prime.
    r: u64,
}

impl Fingerprint {
    /// A checker with the first prime at or after a 62-bit number derived from `seed` (the
    /// driver seeds it from its own randomness; the simulator from its run's seed).
    pub fn new(seed: u64) -> Fingerprint {
        let mut candidate = (splitmix(seed) | (1 << 61) | 1) & ((1 << 62) - 1);
        while !is_prime(candidate) {
            candidate += 2;
        }
        let prime = candidate;
        // Newton's iteration doubles the correct low bits of the inverse each step.
        let mut inverse: u64 = prime;
        for _ in 0..6 {
            inverse = inverse.wrapping_mul(2u64.wrapping_sub(prime.wrapping_mul(inverse)));
        }
        let r = ((1u128 << 64) % prime as u128) as u64;
        Fingerprint { prime, neg_inverse: inverse.wrapping_neg(), r }
    }

    /// `x` modulo the prime.
    pub fn of(&self, x: &Big) -> u64 {
        x.residue(self.prime)
    }

    /// The product of the integers `first..=last` modulo the prime (1 when empty).
    pub fn of_range(&self, first: u64, last: u64) -> u64 {
        self.of_product((first..=last).map(|i| i % self.prime))
    }

    /// swing(m) = m! / (⌊m/2⌋!)² modulo the prime: a quotient of two range products, by the
    /// inverse of the divisor (the prime is above every factor of it, so it is invertible).
    pub fn of_swing(&self, m: u64) -> u64 {
        let half = m / 2;
        let (lower, upper) = (self.of_range(2, half), self.of_range(half + 1, m));
        self.mul(upper, self.pow(lower, self.prime - 2))
    }

    /// The residue of the value a task's product must have.
    pub fn of_value(&self, value: Product) -> u64 {
        match value {
            Product::Range { first, last } => self.of_range(first, last),
            Product::Swing { m } => self.of_swing(m),
        }
    }

    /// The product of residues (each below the prime).
    pub fn of_product(&self, residues: impl IntoIterator<Item = u64>) -> u64 {
        // Each reduction divides by 2⁶⁴ once; the count of them is made up at the end.
        let (mut acc, mut reductions) = (1 % self.prime, 0u64);
        for r in residues {
            acc = self.reduce(acc as u128 * r as u128);
            reductions += 1;
        }
        self.mul(acc, self.pow(self.r, reductions))
    }

    /// t · 2⁻⁶⁴ mod prime, for t < prime · 2⁶⁴.
    fn reduce(&self, t: u128) -> u64 {
        let m = (t as u64).wrapping_mul(self.neg_inverse);
        let u = ((t + m as u128 * self.prime as u128) >> 64) as u64;
        if u >= self.prime {
            u - self.prime
        } else {
            u
        }
    }

    fn pow(&self, mut base: u64, mut exponent: u64) -> u64 {
        let mut result = 1 % self.prime;
        while exponent > 0 {
            if exponent & 1 == 1 {
                result = self.mul(result, base);
            }
            base = self.mul(base, base);
            exponent >>= 1;
        }
        result
    }

    /// A decimal number modulo the prime; `None` if `digits` is not one.
    pub fn of_decimal(&self, digits: &str) -> Option<u64> {
        self.of_decimal_bytes(digits.as_bytes())
    }

    /// [`Fingerprint::of_decimal`] of ASCII bytes.
    pub fn of_decimal_bytes(&self, digits: &[u8]) -> Option<u64> {
        let mut residue = self.decimal_residue();
        residue.feed(digits).then_some(())?;
        residue.finish()
    }

    /// The residue of Σ residues\[i\] · 10^(width·i): a number from its residues in base
    /// 10^width, lowest first.
    pub fn of_decimal_pieces(&self, residues: &[u64], width: u64) -> u64 {
        let base = self.pow(10 % self.prime, width);
        residues.iter().rev().fold(0, |acc, &r| (self.mul(acc, base) + r % self.prime) % self.prime)
    }

    /// The residue of a decimal number read in pieces (a stream of digits that is never
    /// held whole).
    pub fn decimal_residue(&self) -> DecimalResidue {
        DecimalResidue { fp: *self, acc: 0, pending: 0, pending_len: 0, digits: 0 }
    }

    fn mul(&self, a: u64, b: u64) -> u64 {
        ((a as u128 * b as u128) % self.prime as u128) as u64
    }
}

/// A decimal number modulo a [`Fingerprint`]'s prime, fed piece by piece; eighteen digits
/// are folded in at a time.
pub struct DecimalResidue {
    fp: Fingerprint,
    acc: u64,
    pending: u64,
    pending_len: u32,
    digits: u64,
}

impl DecimalResidue {
    /// Takes the next digits; `false`, taking none, if `bytes` holds anything but digits.
    pub fn feed(&mut self, bytes: &[u8]) -> bool {
        if !bytes.iter().all(u8::is_ascii_digit) {
            return false;
        }
        for &d in bytes {
            self.pending = self.pending * 10 + u64::from(d - b'0');
            self.pending_len += 1;
            if self.pending_len == 18 {
                self.fold();
            }
        }
        self.digits += bytes.len() as u64;
        true
    }

    /// How many digits it took.
    pub fn digits(&self) -> u64 {
        self.digits
    }

    /// The number's residue; `None` if no digit came.
    pub fn finish(mut self) -> Option<u64> {
        self.fold();
        (self.digits > 0).then_some(self.acc)
    }

    fn fold(&mut self) {
        let scale = 10u128.pow(self.pending_len);
        self.acc = ((self.acc as u128 * scale + self.pending as u128) % self.fp.prime as u128) as u64;
        (self.pending, self.pending_len) = (0, 0);
    }
}

/// Whether the bit length of a product of numbers with `operand_bits` is possible: the
/// product of numbers of a and b bits has a + b - 1 or a + b bits (for nonzero operands).
pub fn plausible_bits(product_bits: u64, operand_bits: &[u64]) -> bool {
    let most: u64 = operand_bits.iter().sum();
    let least = most.saturating_sub(operand_bits.len().saturating_sub(1) as u64);
    (least..=most).contains(&product_bits)
}

/// The bit lengths a product of the integers `first..=last` (all ≥ 1) can have: between the
/// sums of ⌊log2 i⌋ + 1 minus one per multiplication, and those sums.
pub fn plausible_range_bits(product_bits: u64, first: u64, last: u64) -> bool {
    if first > last {
        return product_bits <= 1;
    }
    let (mut most, mut count) = (0u64, last - first + 1);
    let mut i = first;
    // Integers with the same bit length, counted in blocks: O(64) steps, not O(last - first).
    while i <= last {
        let bits = 64 - i.leading_zeros() as u64;
        let block_end = if bits >= 64 { last } else { ((1u64 << bits) - 1).min(last) };
        most += bits * (block_end - i + 1);
        if block_end == u64::MAX {
            break;
        }
        i = block_end + 1;
    }
    count -= 1;
    (most.saturating_sub(count)..=most).contains(&product_bits)
}

/// The bit lengths swing(m) can have: C(m, m/2) for even m lies in [2^m / (m+1), 2^m], and
/// m · C(m-1, (m-1)/2) for odd m in [2^(m-1), m · 2^(m-1)].
fn plausible_swing_bits(product_bits: u64, m: u64) -> bool {
    let log = |x: u64| u64::from(u64::BITS - x.leading_zeros());
    (m.saturating_sub(log(m + 1))..=m + log(m) + 1).contains(&product_bits)
}

/// Whether a product of `product_bits` bits can have the value `value`.
pub fn plausible_value_bits(product_bits: u64, value: Product) -> bool {
    match value {
        Product::Range { first, last } => plausible_range_bits(product_bits, first, last),
        Product::Swing { m } => plausible_swing_bits(product_bits, m),
    }
}

/// Checks a worker's answer to `items`: one product per task asked for, none other, each of
/// a possible size and with the residue its operands (or integers) call for. Off the event
/// loop: it reads every byte of the operands and products once.
pub fn check_answer(fp: &Fingerprint, items: &[WorkItem], products: &[(OpRef, Big)]) -> Result<(), String> {
    if products.len() != items.len() {
        return Err(format!("{} products for {} tasks", products.len(), items.len()));
    }
    for (op, product) in products {
        let item = items.iter().find(|i| &i.op == op).ok_or_else(|| format!("a product for {op:?}, not asked for"))?;
        check_product(fp, item, product).map_err(|why| format!("task {op:?} of {}!: {why}", item.n))?;
    }
    Ok(())
}

/// Whether `product` is the value the task `op` must make (its whole subtree's).
pub fn check_subtree(fp: &Fingerprint, plan: &Plan, op: OpId, product: &Big) -> bool {
    let value = plan.product_of(op);
    plausible_value_bits(product.significant_bits(), value) && fp.of(product) == fp.of_value(value)
}

fn check_product(fp: &Fingerprint, item: &WorkItem, product: &Big) -> Result<(), String> {
    let bits = product.significant_bits();
    let plan = Plan::new(item.n);
    let expected = if plan.task_inputs(item.op.op).children().is_empty() {
        let value = plan.product_of(item.op.op);
        if !plausible_value_bits(bits, value) {
            return Err(format!("a product of {bits} bits cannot be {value:?}"));
        }
        fp.of_value(value)
    } else {
        // A squared operand counts as two.
        let squared = item.operands.first().filter(|_| plan.squares_first(item.op.op));
        let factors: Vec<&Big> = squared.into_iter().chain(&item.operands).collect();
        let operand_bits: Vec<u64> = factors.iter().map(|o| o.significant_bits()).collect();
        if !plausible_bits(bits, &operand_bits) {
            return Err(format!("a product of {bits} bits cannot be that of operands of {operand_bits:?} bits"));
        }
        fp.of_product(factors.iter().map(|o| fp.of(o)))
    };
    if fp.of(product) != expected {
        return Err("the product's residue does not match its operands'".into());
    }
    Ok(())
}

fn splitmix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Miller-Rabin with the bases that decide every 64-bit number.
fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    const BASES: [u64; 12] = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37];
    if let Some(&p) = BASES.iter().find(|&&p| n.is_multiple_of(p)) {
        return n == p;
    }
    let (mut d, mut s) = (n - 1, 0);
    while d % 2 == 0 {
        d /= 2;
        s += 1;
    }
    let mul = |a: u64, b: u64| ((a as u128 * b as u128) % n as u128) as u64;
    let pow = |mut b: u64, mut e: u64| {
        let mut r = 1;
        while e > 0 {
            if e & 1 == 1 {
                r = mul(r, b);
            }
            b = mul(b, b);
            e >>= 1;
        }
        r
    };
    BASES.iter().all(|&a| {
        let mut x = pow(a, d);
        if x == 1 || x == n - 1 {
            return true;
        }
        (1..s).any(|_| {
            x = mul(x, x);
            x == n - 1
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primes_are_found_and_differ_by_seed() {
        assert!(is_prime(2) && is_prime(1_000_000_007) && !is_prime(1_000_000_007 * 3));
        let (a, b) = (Fingerprint::new(1), Fingerprint::new(2));
        assert!(is_prime(a.prime) && a.prime >> 61 == 1);
        assert_ne!(a.prime, b.prime);
    }

    #[test]
    fn residues_multiply_like_the_numbers() {
        let f = Fingerprint::new(7);
        let (x, y) = (Big::factorial(300), Big::from(123_456_789));
        assert_eq!(f.of(&Big::product(&[x.clone(), y.clone()])), f.of_product([f.of(&x), f.of(&y)]));
        assert_eq!(f.of_range(2, 300), f.of(&Big::factorial(300)));
        assert_eq!(f.of_decimal(&Big::factorial(300).to_decimal()), Some(f.of(&x)));
        assert_eq!(f.of_decimal("12a"), None);
        assert_ne!(f.of(&Big::from(7)), f.of(&x), "a forged product");
    }

    #[test]
    fn digits_fed_in_pieces_give_the_residue_of_the_whole() {
        let f = Fingerprint::new(7);
        let digits = Big::factorial(300).to_decimal();
        for size in [1, 7, 18, 19, 1000] {
            let mut residue = f.decimal_residue();
            assert!(digits.as_bytes().chunks(size).all(|piece| residue.feed(piece)));
            assert_eq!(residue.digits(), digits.len() as u64);
            assert_eq!(residue.finish(), Some(f.of(&Big::factorial(300))), "pieces of {size}");
        }
        assert_eq!(f.decimal_residue().finish(), None, "no digits are no number");
    }

    #[test]
    fn sizes_are_checked() {
        let x = Big::factorial(1000);
        let bits = x.significant_bits();
        assert!(plausible_range_bits(bits, 2, 1000));
        assert!(!plausible_range_bits(3, 2, 1000), "7 is not 1000!");
        assert!(!plausible_range_bits(bits * 2, 2, 1000) && !plausible_range_bits(bits / 2, 2, 1000));
        assert!(plausible_bits(7, &[3, 4]) && plausible_bits(6, &[3, 4]) && !plausible_bits(5, &[3, 4]));
    }
}
