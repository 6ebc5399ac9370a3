//! Decimal conversion spread over the workers: the layout of the pieces and the checks that
//! trust no worker. Pure: the driver moves the numbers and the digits.
//!
//! A finished product X is converted in two kinds of task, as GMP's subquadratic
//! `mpn_get_str` divides by powers of ten:
//! 1. **split** (one worker): X = Σ piece_i · 10^(width·i), `pieces` numbers, lowest first.
//!    The worker divides by 10^(width·pieces/2), then each half by the next power down, the
//!    halves on threads of their own.
//! 2. **digits** (one task per piece, spread over the workers): a piece's decimal digits,
//!    padded with zeros to `width` (the top piece is not padded).
//!
//! The coordinator never divides or converts: it concatenates. It checks every answer
//! modulo its secret prime (see [`Fingerprint`]): the pieces must recombine to X, and a
//! piece's digits must be that piece. A digits answer of the right value but too long shows
//! a piece of `width` digits or more, so the split is done again elsewhere; any other wrong
//! answer makes only its piece go to another worker.

use crate::bignum::Big;
use crate::coordinator::Fingerprint;
use serde::{Deserialize, Serialize};

/// Products with fewer bits (1,262,612 digits, about 254,000!) are converted where they are:
/// tens of milliseconds, about what the round trips and child processes of a spread
/// conversion cost.
pub const SPREAD_BITS_MIN: u64 = 1 << 22;
/// At most this many pieces. Each piece is converted by a child process on all of its
/// worker's cores, while the split's divisions run on one worker, the top one on one core:
/// every level of pieces more puts more of the sequential work there. On two cores
/// 100,000,000! took 61 + 77 s in 8 pieces (docs/DESIGN.md, "Numbers").
const PIECES_MAX: usize = 2;

/// How a product is cut into pieces of decimal digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// How many pieces: a power of two, at least 2.
    pub pieces: usize,
    /// Digits per piece; the top piece has at least one and may have a few more.
    pub width: u64,
}

impl Layout {
    /// The layout for a product of `bits` bits spread over `workers` workers; `None` when
    /// the product is converted in one piece where it is.
    pub fn of(bits: u64, workers: usize) -> Option<Layout> {
        if bits < SPREAD_BITS_MIN || workers == 0 {
            return None;
        }
        let pieces = workers.next_power_of_two().clamp(2, PIECES_MAX);
        // One fewer than the fewest digits X can have (less one more for the float's
        // rounding): then (pieces − 1)·width < digits − 1 and the top piece is never zero.
        let digits_low = (((bits - 1) as f64) * std::f64::consts::LOG10_2).floor() as u64;
        let width = (digits_low.saturating_sub(1) / pieces as u64).max(1);
        Some(Layout { pieces, width })
    }
}

/// One task of a spread conversion, as a worker receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Conversion {
    /// Cut `number` into `layout.pieces` pieces of `layout.width` digits, lowest first.
    Split { number: Big, layout: Layout },
    /// The decimal digits of `number`, padded with zeros to `width` (0: not padded).
    Digits { number: Big, width: u64 },
}

impl Conversion {
    /// Checks a task before any work, against what a coordinator of this cluster could ask
    /// (`max_n`): a hostile width would make a worker build a power of ten or a padding of
    /// any size.
    pub fn check(&self, max_n: u64) -> Result<(), String> {
        let digits_max = digits_max(max_n);
        match self {
            Conversion::Split { number, layout } => {
                let digits_low =
                    ((number.significant_bits().saturating_sub(1)) as f64 * std::f64::consts::LOG10_2) as u64;
                let pieces = layout.pieces;
                if !pieces.is_power_of_two() || !(2..=PIECES_MAX).contains(&pieces) {
                    return Err(format!("a split into {pieces} pieces (a power of two from 2 to {PIECES_MAX})"));
                }
                if layout.width == 0 || layout.width.saturating_mul(pieces as u64) > digits_low {
                    return Err(format!(
                        "{pieces} pieces of {} digits do not fit a number of {digits_low}+ digits",
                        layout.width
                    ));
                }
            }
            Conversion::Digits { width, .. } if *width > digits_max => {
                return Err(format!("a padding to {width} digits, beyond the {digits_max} of {max_n}!"));
            }
            Conversion::Digits { .. } => {}
        }
        if self.number().significant_bits() as f64 * std::f64::consts::LOG10_2 > digits_max as f64 {
            return Err(format!("a number larger than {max_n}!"));
        }
        Ok(())
    }

    pub fn number(&self) -> &Big {
        match self {
            Conversion::Split { number, .. } | Conversion::Digits { number, .. } => number,
        }
    }
}

/// More digits than n! has (n! < n^n).
fn digits_max(n: u64) -> u64 {
    (n as f64 * (n.max(2) as f64).log10()).ceil() as u64 + 1
}

/// Who gave a wrong answer for a piece.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PieceFault {
    /// The digits are not the piece: convert it again on another worker.
    Converter(String),
    /// The digits are the piece, but the piece has `width` digits or more: it is not a digit
    /// of X in base 10^width, and the split must be done again.
    Splitter(String),
}

/// Checks the digits of piece `index` of `layout` against the piece's residue.
pub fn check_piece(
    fp: &Fingerprint,
    residue: u64,
    digits: &[u8],
    layout: Layout,
    index: usize,
) -> Result<(), PieceFault> {
    let fault = |why: &str| PieceFault::Converter(format!("piece {index}: {why}"));
    if fp.of_decimal_bytes(digits) != Some(residue) {
        return Err(fault("its digits are not the piece's value"));
    }
    let width = layout.width as usize;
    let top = index + 1 == layout.pieces;
    let padding = digits.iter().take_while(|&&d| d == b'0').count();
    if top {
        return match (digits.len(), padding) {
            (_, 0) => Ok(()),
            (len, zeros) if zeros == len => Err(PieceFault::Splitter(format!("piece {index}: the top piece is zero"))),
            _ => Err(fault("the top piece has leading zeros")),
        };
    }
    match digits.len() {
        len if len == width => Ok(()),
        len if len < width => Err(fault("fewer digits than its width")),
        len if padding >= len - width => Err(fault("padded beyond its width")),
        len => Err(PieceFault::Splitter(format!("piece {index}: {len} digits, beyond its width {width}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_keep_the_top_piece_nonzero_and_small_products_whole() {
        assert_eq!(Layout::of(SPREAD_BITS_MIN - 1, 5), None);
        assert_eq!(Layout::of(SPREAD_BITS_MIN, 0), None);
        for (n, workers) in [(300_000u64, 5usize), (1_000_000, 1), (1_000_000, 5), (1_000_000, 40), (3_000_000, 3)] {
            let x = Big::factorial(n);
            let layout = Layout::of(x.significant_bits(), workers).expect("large enough to spread");
            assert!(layout.pieces.is_power_of_two() && (2..=PIECES_MAX).contains(&layout.pieces));
            let pieces = x.clone().split_decimal(layout.pieces, layout.width);
            assert_eq!(pieces.len(), layout.pieces);
            assert!(pieces.last().is_some_and(|top| top.significant_bits() > 0), "{n}!: top piece zero");
            let joined: String = pieces
                .iter()
                .rev()
                .enumerate()
                .map(|(i, p)| {
                    let digits = p.to_decimal();
                    let padding = if i == 0 { 0 } else { layout.width as usize - digits.len() };
                    "0".repeat(padding) + &digits
                })
                .collect();
            assert_eq!(joined, x.to_decimal(), "{n}! over {workers} workers");
            assert_eq!(Conversion::Split { number: x, layout }.check(n), Ok(()));
        }
    }

    #[test]
    fn a_worker_is_asked_only_what_a_coordinator_could_ask() {
        let x = Big::factorial(300_000);
        let layout = Layout::of(x.significant_bits(), 5).unwrap();
        let split = |pieces, width| Conversion::Split { number: x.clone(), layout: Layout { pieces, width } };
        assert!(split(3, layout.width).check(300_000).is_err(), "not a power of two");
        assert!(split(16, layout.width).check(300_000).is_err(), "too many pieces");
        assert!(split(layout.pieces, 0).check(300_000).is_err(), "no width");
        assert!(split(layout.pieces, layout.width * 2).check(300_000).is_err(), "a power beyond the number");
        assert!(split(layout.pieces, layout.width).check(1_000).is_err(), "beyond max_n");
        let digits = |width| Conversion::Digits { number: Big::from(7), width };
        assert_eq!(digits(1_000).check(1_000), Ok(()));
        assert!(digits(u64::MAX).check(1_000).is_err(), "a padding of any size");
    }

    #[test]
    fn piece_checks_blame_the_right_worker() {
        let fp = Fingerprint::new(7);
        let layout = Layout { pieces: 4, width: 5 };
        let check = |value: u64, digits: &str, index| {
            check_piece(&fp, fp.of(&Big::from(value)), digits.as_bytes(), layout, index)
        };
        assert_eq!(check(42, "00042", 0), Ok(()));
        assert_eq!(check(42, "42", 3), Ok(()), "the top piece is not padded");
        assert!(matches!(check(42, "00043", 0), Err(PieceFault::Converter(_))), "a wrong value");
        assert!(matches!(check(42, "0042", 0), Err(PieceFault::Converter(_))), "too short");
        assert!(matches!(check(42, "000042", 0), Err(PieceFault::Converter(_))), "padded too far");
        assert!(matches!(check(42, "0x042", 0), Err(PieceFault::Converter(_))), "not digits");
        assert!(matches!(check(42, "042", 3), Err(PieceFault::Converter(_))), "a padded top");
        assert!(matches!(check(123_456, "123456", 1), Err(PieceFault::Splitter(_))), "a piece too large");
        assert!(matches!(check(0, "0", 3), Err(PieceFault::Splitter(_))), "a zero top");
    }

    #[test]
    fn pieces_recombine_only_to_their_number() {
        let fp = Fingerprint::new(11);
        let x = Big::factorial(300_000);
        let layout = Layout::of(x.significant_bits(), 4).unwrap();
        let mut residues: Vec<u64> =
            x.clone().split_decimal(layout.pieces, layout.width).iter().map(|p| fp.of(p)).collect();
        assert_eq!(fp.of_decimal_pieces(&residues, layout.width), fp.of(&x));
        residues.swap(0, 1);
        assert_ne!(fp.of_decimal_pieces(&residues, layout.width), fp.of(&x));
    }
}
