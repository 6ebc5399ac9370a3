//! The one place that names the big-integer crate (malachite; see docs/DESIGN.md for the
//! measurements behind the choice). Everything else sees [`Big`]: multiply a few values, move
//! them as bytes, print them in decimal at the edges.

use malachite_base::num::logic::traits::SignificantBits;
use malachite_nz::natural::Natural;
use malachite_nz::platform::Limb;
use std::fmt;
use std::sync::Arc;

/// Numbers with fewer bits are converted to decimal in one piece.
const DECIMAL_SPLIT_BITS_MIN: u64 = 1 << 22;

/// A non-negative integer of any size. Immutable and shared: a clone is a reference, not a
/// copy (a product near the top of a large factorial is megabytes, and the coordinator hands
/// the same one to the scheduler, the checkpoint, the disk writer and the replicas).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Big(Arc<Natural>);

impl Big {
    fn new(n: Natural) -> Big {
        Big(Arc::new(n))
    }

    /// The number itself, copied only if it is shared (multiplying owned values reuses their
    /// memory).
    fn into_natural(self) -> Natural {
        Arc::try_unwrap(self.0).unwrap_or_else(|shared| (*shared).clone())
    }

    /// The number of bits, 0 for zero.
    pub fn significant_bits(&self) -> u64 {
        (&*self.0).significant_bits()
    }

    /// The number modulo `m` (`m` > 0).
    pub fn residue(&self, m: u64) -> u64 {
        let r = &*self.0 % Natural::from(m);
        u64::try_from(&r).unwrap_or(0) // below m, so it fits
    }

    /// This number plus one (a wrong product, for fault injection).
    pub fn plus_one(&self) -> Big {
        Big::new(&*self.0 + Natural::from(1u32))
    }

    /// The number one (the empty product).
    pub fn one() -> Big {
        Big::new(Natural::from(1u32))
    }

    /// Multiplies `values` (the empty product is 1). Pairs neighbours first, so four values
    /// cost two balanced multiplications and one of the results, not three of growing size.
    pub fn product(values: &[Big]) -> Big {
        match values {
            [] => Big::one(),
            [a] => a.clone(),
            [a, b] => Big::new(&*a.0 * &*b.0),
            _ => {
                let (left, right) = values.split_at(values.len() / 2);
                Big::new(Big::product(left).into_natural() * Big::product(right).into_natural())
            }
        }
    }

    /// Multiplies in rounds: each round replaces every run of `fan_in` neighbours by their
    /// product (`on_operation` is told each operation's operand count), `rounds` times. The
    /// plan's subtrees are computed this way; working on owned numbers, it allocates nothing
    /// per small integer and reuses each product's memory for the next.
    pub fn multiply_in_rounds(
        values: Vec<Big>,
        rounds: u32,
        fan_in: usize,
        on_operation: impl FnMut(usize),
    ) -> Vec<Big> {
        let owned = values.into_iter().map(Big::into_natural).collect();
        rounds_of_products(owned, rounds, fan_in, on_operation).into_iter().map(Big::new).collect()
    }

    /// [`Big::multiply_in_rounds`] starting from machine words (the integers of a range, the
    /// prime powers of a swing).
    pub fn multiply_words_in_rounds(
        words: impl IntoIterator<Item = u64>,
        rounds: u32,
        fan_in: usize,
        on_operation: impl FnMut(usize),
    ) -> Vec<Big> {
        let owned = words.into_iter().map(Natural::from).collect();
        rounds_of_products(owned, rounds, fan_in, on_operation).into_iter().map(Big::new).collect()
    }

    /// a² · b: a squaring, cheaper than a product of two distinct numbers, then a product.
    pub fn square_times(a: Big, b: &Big) -> Big {
        use malachite_base::num::arithmetic::traits::Square;
        Big::new(a.into_natural().square() * &*b.0)
    }

    /// n!, by the big-integer crate's own algorithm in one piece: an answer that owes
    /// nothing to the cluster's plan or transport, for clients that check results.
    pub fn factorial(n: u64) -> Big {
        use malachite_base::num::arithmetic::traits::Factorial;
        Big::new(Natural::factorial(n))
    }

    /// Little-endian bytes, without trailing zero bytes (zero is the empty vector).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes: Vec<u8> = self.0.to_limbs_asc().iter().flat_map(|limb| limb.to_le_bytes()).collect();
        while bytes.last() == Some(&0) {
            bytes.pop();
        }
        bytes
    }

    /// The inverse of [`Big::to_bytes`]; any byte string is a valid number.
    pub fn from_bytes(bytes: &[u8]) -> Big {
        const LIMB_BYTES: usize = std::mem::size_of::<Limb>();
        let limbs: Vec<Limb> = bytes
            .chunks(LIMB_BYTES)
            .map(|chunk| {
                let mut limb = [0u8; LIMB_BYTES];
                limb[..chunk.len()].copy_from_slice(chunk);
                Limb::from_le_bytes(limb)
            })
            .collect();
        Big::new(Natural::from_limbs_asc(&limbs))
    }

    /// Decimal digits. A large number is split in two at a power of ten and the halves are
    /// converted on threads of their own, one per core: on two cores 10,000,000! takes about
    /// 8 s, against 11 s in one piece. It is not split further, into more threads than cores:
    /// that is slower and needs half as much memory again (DESIGN.md, "Decimal conversion").
    pub fn to_decimal(&self) -> String {
        if (&self.0).significant_bits() < DECIMAL_SPLIT_BITS_MIN {
            // Asking for the cores reads cgroup files: not for every small number.
            return self.0.to_string();
        }
        self.to_decimal_on(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// [`Big::to_decimal`] on this thread alone: the one-thread figure `facto bench`
    /// compares the cluster with.
    pub fn to_decimal_in_one_thread(&self) -> String {
        self.0.to_string()
    }

    fn to_decimal_on(&self, threads: usize) -> String {
        use malachite_base::num::arithmetic::traits::{DivRem, Pow};
        let bits = (&self.0).significant_bits();
        if bits < DECIMAL_SPLIT_BITS_MIN || threads < 2 {
            return self.0.to_string();
        }
        // Fewer digits than the number has, so the high half is never empty.
        let low_digits = (bits as f64 * std::f64::consts::LOG10_2 / 2.0) as u64;
        let (high, low) = (&*self.0).div_rem(Natural::from(10u32).pow(low_digits));
        let (high, low) = std::thread::scope(|s| {
            let high = s.spawn(|| Big::new(high).to_decimal_on(threads - threads / 2));
            let low = Big::new(low).to_decimal_on(threads / 2);
            (high.join().unwrap_or_else(|e| std::panic::resume_unwind(e)), low)
        });
        let padding = (low_digits as usize).saturating_sub(low.len());
        let mut out = String::with_capacity(high.len() + padding + low.len());
        out.push_str(&high);
        out.extend(std::iter::repeat_n('0', padding));
        out.push_str(&low);
        out
    }

    /// This number's digits in base 10^width, `pieces` of them (a power of two), lowest
    /// first: self = Σ piece_i · 10^(width·i), the top piece taking what is left. Divides by
    /// 10^(width·pieces/2), then each half by the next power down, the halves on threads of
    /// their own (one per core). Takes the number: it is not copied unless shared.
    pub fn split_decimal(self, pieces: usize, width: u64) -> Vec<Big> {
        use malachite_base::num::arithmetic::traits::Pow;
        let levels = pieces.max(1).trailing_zeros() as usize;
        // powers[j] = 10^(width·2^j), each the square of the one before.
        let mut powers: Vec<Natural> = Vec::with_capacity(levels);
        for j in 0..levels {
            let next = match j {
                0 => Natural::from(10u32).pow(width),
                _ => &powers[j - 1] * &powers[j - 1],
            };
            powers.push(next);
        }
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        split_by_powers(self.into_natural(), &powers, threads).into_iter().map(Big::new).collect()
    }

    /// How many bytes [`Big::to_bytes`] would produce (cheap: no conversion).
    pub fn byte_len(&self) -> usize {
        (&self.0).significant_bits().div_ceil(8) as usize
    }
}

impl From<u64> for Big {
    fn from(v: u64) -> Big {
        Big::new(Natural::from(v))
    }
}

impl fmt::Display for Big {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

fn rounds_of_products(
    mut values: Vec<Natural>,
    rounds: u32,
    fan_in: usize,
    mut on_operation: impl FnMut(usize),
) -> Vec<Natural> {
    for _ in 0..rounds {
        let mut next = Vec::with_capacity(values.len().div_ceil(fan_in.max(1)));
        let mut rest = values.into_iter().peekable();
        while rest.peek().is_some() {
            let chunk: Vec<Natural> = rest.by_ref().take(fan_in.max(1)).collect();
            on_operation(chunk.len());
            next.push(product_of_owned(chunk));
        }
        values = next;
    }
    values
}

/// `x` in base `powers[0]`, 2^powers.len() digits, lowest first (see [`Big::split_decimal`]).
fn split_by_powers(x: Natural, powers: &[Natural], threads: usize) -> Vec<Natural> {
    use malachite_base::num::arithmetic::traits::DivRem;
    let Some((power, lower)) = powers.split_last() else { return vec![x] };
    let (high, low) = x.div_rem(power);
    let (mut low, high) = if threads >= 2 {
        std::thread::scope(|s| {
            let high = s.spawn(|| split_by_powers(high, lower, threads - threads / 2));
            let low = split_by_powers(low, lower, threads / 2);
            (low, high.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
        })
    } else {
        (split_by_powers(low, lower, 1), split_by_powers(high, lower, 1))
    };
    low.extend(high);
    low
}

/// Multiplies owned numbers, neighbours first (balanced sizes).
fn product_of_owned(mut values: Vec<Natural>) -> Natural {
    match values.len() {
        0 => Natural::from(1u32),
        1 => values.pop().unwrap_or_else(|| Natural::from(1u32)),
        len => {
            let right = values.split_off(len / 2);
            product_of_owned(values) * product_of_owned(right)
        }
    }
}

/// Shortens a long decimal for logs: the first and last digits and the count.
pub fn abbreviate(decimal: &str) -> String {
    const KEEP: usize = 20;
    if decimal.len() <= 2 * KEEP + 10 {
        decimal.to_string()
    } else {
        format!("{}...{} ({} digits)", &decimal[..KEEP], &decimal[decimal.len() - KEEP..], decimal.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_of_up_to_four_values() {
        let v: Vec<Big> = [3u64, 5, 7, 11].iter().map(|&x| Big::from(x)).collect();
        assert_eq!(Big::product(&[]).to_decimal(), "1");
        assert_eq!(Big::product(&v[..1]).to_decimal(), "3");
        assert_eq!(Big::product(&v[..3]).to_decimal(), "105");
        assert_eq!(Big::product(&v).to_decimal(), "1155");
    }

    #[test]
    fn bytes_round_trip() {
        let big = Big::product(&[Big::from(u64::MAX), Big::from(u64::MAX), Big::from(255)]);
        for n in [Big::from(0), Big::from(1), Big::from(256), big] {
            let bytes = n.to_bytes();
            assert_eq!(bytes.len(), n.byte_len());
            assert_eq!(Big::from_bytes(&bytes), n);
        }
        assert_eq!(Big::from_bytes(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0]).to_decimal(), "1");
    }

    #[test]
    fn large_numbers_convert_to_the_same_digits_in_two_halves() {
        let big = Big::factorial(300_000);
        assert!((&big.0).significant_bits() >= DECIMAL_SPLIT_BITS_MIN, "the test must take the split path");
        assert_eq!(big.to_decimal_on(4), big.0.to_string());
        // A low half with leading zeros: 10^k + 1 splits into "1" and "0...01".
        let k = 2_000_000u64;
        use malachite_base::num::arithmetic::traits::Pow;
        let sparse = Big::new(Natural::from(10u32).pow(k) + Natural::from(1u32));
        assert_eq!(sparse.to_decimal_on(2), sparse.0.to_string());
    }

    #[test]
    fn abbreviates_long_numbers_only() {
        assert_eq!(abbreviate("120"), "120");
        let long = "1".repeat(100);
        assert_eq!(abbreviate(&long), format!("{}...{} (100 digits)", "1".repeat(20), "1".repeat(20)));
    }
}
