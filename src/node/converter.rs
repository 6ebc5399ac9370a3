//! Decimal conversion of large numbers in a child process (`facto to-decimal`): a product's
//! digits, or a worker's task of a spread conversion (a split, a piece's digits).
//!
//! Converting 10,000,000! (27 MB in, 65 million digits out) takes seconds and allocates and
//! frees hundreds of large buffers. Even on nice-10 threads of the node's own process it
//! deposes healthy coordinators: every runtime thread of the coordinator falls asleep at
//! once, for up to a tenth of a second, while dozens of preempted nice-10 conversion threads
//! run. The runtime waits on something it shares with them (the allocator's locks or the
//! process's memory map), held by a thread the scheduler has parked (docs/DESIGN.md has the
//! `perf sched` trace). A child process shares neither. It inherits the calling thread's
//! niceness, so it still only gets the cycles the members' control traffic leaves.

use crate::bignum::Big;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

/// Products with fewer bits are converted in-process: a few milliseconds, less than starting
/// a process.
pub const CHILD_BITS_MIN: u64 = 1 << 22;

/// The digits, and the child's peak resident set size (`None`: converted in-process).
pub struct Converted {
    pub decimal: String,
    pub child_peak_rss_bytes: Option<u64>,
}

/// Converts `product` to decimal; a large one in a child process running `program
/// to-decimal` when a program is given. Blocks: call it from a compute thread. A child that
/// fails (cannot start, dies, answers something that is not the number's digits) is logged
/// and the conversion is done here instead, so the result is never lost to the helper.
pub fn to_decimal(product: &Big, program: Option<&Path>) -> Converted {
    if let Some(program) = program.filter(|_| product.significant_bits() >= CHILD_BITS_MIN) {
        match in_child(product, program) {
            Ok(converted) => return converted,
            Err(why) => log::warn!("decimal conversion in a child process failed ({why}); converting here"),
        }
    }
    Converted { decimal: product.to_decimal(), child_peak_rss_bytes: None }
}

/// Hands the product's bytes to a child on stdin and reads its digits from stdout.
fn in_child(product: &Big, program: &Path) -> Result<Converted, String> {
    let digits_max = (product.significant_bits() as f64 * std::f64::consts::LOG10_2) as usize + 2;
    let (decimal, peak_rss_bytes) = run_child(program, &[], product.to_bytes(), digits_max)?;
    let decimal = String::from_utf8(decimal).map_err(|_| "the child's answer is not text".to_string())?;
    check_digits(&decimal, product.significant_bits())?;
    check_low_digits(&decimal, product)?;
    Ok(Converted { decimal, child_peak_rss_bytes: peak_rss_bytes })
}

/// `number` in base 10^width, `pieces` numbers lowest first, as a frame
/// ([`Big::split_decimal`]), and the child's peak resident set size; a large number in a
/// child process running `program to-decimal --pieces P --width W` when a program is given,
/// for the reasons above. A child that fails is logged and the split done here. Blocks: call
/// it from a compute thread.
pub fn split(number: Big, pieces: usize, width: u64, program: Option<&Path>) -> Result<(Vec<u8>, Option<u64>), String> {
    if let Some(program) = program.filter(|_| number.significant_bits() >= CHILD_BITS_MIN) {
        let args = ["--pieces".to_string(), pieces.to_string(), "--width".to_string(), width.to_string()];
        // The pieces take about the number's bytes, plus the frame's lengths and header.
        let expected_len = number.byte_len() + 64 * pieces + 256;
        let answer = run_child(program, &args, number.to_bytes(), expected_len)
            .and_then(|(frame, peak)| crate::api::decode_pieces(&frame).map(|p| (p.len(), frame, peak)));
        match answer {
            Ok((count, frame, peak)) if count == pieces => return Ok((frame, peak)),
            Ok((count, ..)) => {
                log::warn!("a split in a child process gave {count} pieces, not {pieces}; splitting here")
            }
            Err(why) => log::warn!("a split in a child process failed ({why}); splitting here"),
        }
    }
    Ok((crate::api::encode_pieces(&number.split_decimal(pieces, width))?, None))
}

/// Runs `program to-decimal ARGS` with `input` on its stdin; its stdout (read into room for
/// `expected_len` bytes, so hundreds of megabytes are not copied as the buffer doubles) and
/// its peak resident set size.
fn run_child(
    program: &Path,
    args: &[String],
    input: Vec<u8>,
    expected_len: usize,
) -> Result<(Vec<u8>, Option<u64>), String> {
    let mut child = Command::new(program)
        .arg("to-decimal")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
    let (mut stdin, mut stdout) = child.stdin.take().zip(child.stdout.take()).ok_or("no pipes to the child")?;
    let mut output = Vec::with_capacity(expected_len);
    // Written on a second thread: a child that answers early must not block on a full pipe.
    let read = std::thread::scope(|s| {
        s.spawn(move || {
            let _ = stdin.write_all(&input);
        });
        stdout.read_to_end(&mut output)
    });
    let (status, peak_rss_bytes) = wait_with_peak_rss(&mut child)?;
    read.map_err(|e| format!("reading the child's answer: {e}"))?;
    if !status {
        return Err("the child exited with an error".into());
    }
    Ok((output, peak_rss_bytes))
}

/// A number of `bits` bits (the top one set) has between ⌊(bits − 1)·log10 2⌋ + 1 and
/// ⌊bits·log10 2⌋ + 1 digits: a truncated or padded answer is refused, as are non-digits.
fn check_digits(decimal: &str, bits: u64) -> Result<(), String> {
    let log10_2 = std::f64::consts::LOG10_2;
    let fewest = ((bits - 1) as f64 * log10_2).floor() as usize + 1;
    let most = (bits as f64 * log10_2).floor() as usize + 1;
    if !(fewest..=most).contains(&decimal.len()) {
        return Err(format!("{} digits for a number of {bits} bits", decimal.len()));
    }
    if !decimal.bytes().all(|b| b.is_ascii_digit()) || decimal.starts_with('0') {
        return Err("the answer is not a decimal number".into());
    }
    Ok(())
}

/// The last 18 digits must be the product modulo 10^18 (cheap: one pass over the limbs), so
/// digits that are merely plausible are refused too.
fn check_low_digits(decimal: &str, product: &Big) -> Result<(), String> {
    const LOW_DIGITS: usize = 18;
    let low = &decimal[decimal.len().saturating_sub(LOW_DIGITS)..];
    if low.parse::<u64>().ok() != Some(product.residue(10u64.pow(LOW_DIGITS as u32))) {
        return Err("the answer's last digits are not the number's".into());
    }
    Ok(())
}

/// Waits for the child; whether it succeeded, and its peak resident set size (Linux).
fn wait_with_peak_rss(child: &mut std::process::Child) -> Result<(bool, Option<u64>), String> {
    #[cfg(target_os = "linux")]
    {
        let (mut status, mut usage) = (0, std::mem::MaybeUninit::<libc::rusage>::zeroed());
        loop {
            // SAFETY: waits for our own child by pid; `status` and `usage` are valid for writes.
            let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, usage.as_mut_ptr()) };
            if pid >= 0 {
                break;
            }
            let error = std::io::Error::last_os_error();
            if error.kind() != std::io::ErrorKind::Interrupted {
                return Err(format!("waiting for the child: {error}"));
            }
        }
        // SAFETY: wait4 succeeded, so it filled `usage`.
        let max_rss_kib = unsafe { usage.assume_init() }.ru_maxrss.max(0) as u64;
        Ok((libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, Some(max_rss_kib * 1024)))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let status = child.wait().map_err(|e| format!("waiting for the child: {e}"))?;
        Ok((status.success(), None))
    }
}

/// The child's side (`facto to-decimal`): little-endian bytes of a number on stdin; its
/// decimal digits on stdout, or with `split` (pieces, width) the frame of its pieces.
pub fn serve_child(split: Option<(usize, u64)>) -> std::io::Result<()> {
    stop_with_the_parent();
    let mut bytes = Vec::new();
    std::io::stdin().lock().read_to_end(&mut bytes)?;
    let number = Big::from_bytes(&bytes);
    drop(bytes);
    let answer = match split {
        None => number.to_decimal().into_bytes(),
        Some((pieces, width)) => {
            crate::api::encode_pieces(&number.split_decimal(pieces, width)).map_err(std::io::Error::other)?
        }
    };
    let mut out = std::io::stdout().lock();
    out.write_all(&answer)?;
    out.flush()
}

/// A node killed mid-conversion takes its child with it (Linux), instead of leaving it to
/// convert for seconds for nobody.
fn stop_with_the_parent() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls about this process only.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        // The parent may have died before the call above: then nobody reads the answer.
        if libc::getppid() == 1 {
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_answers_that_are_not_the_numbers_digits() {
        let n = Big::factorial(300);
        let digits = n.to_decimal();
        let bits = n.significant_bits();
        assert_eq!(check_digits(&digits, bits), Ok(()));
        assert!(check_digits(&digits[1..], bits).is_err(), "truncated");
        assert!(check_digits(&format!("{digits}7"), bits).is_err(), "too long");
        assert!(check_digits(&digits.replace('1', "x"), bits).is_err(), "not digits");
        assert_eq!(check_digits("1023", 10), Ok(()));
        assert_eq!(check_digits("512", 10), Ok(()));
        assert!(check_digits("0512", 10).is_err(), "leading zero");
        assert_eq!(check_low_digits(&digits, &n), Ok(()));
        let mut wrong = digits.into_bytes();
        let third_last = wrong.len() - 3;
        wrong[third_last] = if wrong[third_last] == b'9' { b'8' } else { wrong[third_last] + 1 };
        assert!(check_low_digits(&String::from_utf8(wrong).unwrap(), &n).is_err(), "a wrong digit");
        assert_eq!(check_low_digits("720", &Big::factorial(6)), Ok(()));
    }

    #[test]
    fn a_failing_child_leaves_the_conversion_to_this_process() {
        let n = Big::factorial(300_000);
        assert!(n.significant_bits() >= CHILD_BITS_MIN);
        // `false` exits at once with an error and prints nothing.
        let converted = to_decimal(&n, Some(Path::new("false")));
        assert_eq!(converted.decimal, n.to_decimal());
        assert_eq!(converted.child_peak_rss_bytes, None);
    }
}
