//! An in-process mutation fuzzer for the parsers that read untrusted bytes (issue 15), on stable
//! Rust: no coverage feedback, but real seeds (`fuzz/corpus/<target>/`), dictionary tokens
//! (`fuzz/dict/<target>.dict`) and structure-aware mutations (tar headers get their checksum
//! back, text stays UTF-8) keep most inputs deep enough to reach the validators.
//!
//! Shared by `examples/fuzz.rs` (long runs: `cargo run --release --example fuzz -- all
//! --execs 10000000`) and `tests/fuzz.rs` (each target briefly in CI, and every file under
//! `fuzz/corpus/` and `fuzz/regressions/` replayed). A panic is a crash; an execution taking
//! longer than [`HANG`] is a hang; either is saved under `fuzz/crashes/<target>/` and the run
//! fails. A crash, once fixed, moves to `fuzz/regressions/<target>/`.

#![allow(dead_code)]

use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One execution taking this long is a hang.
pub const HANG: Duration = Duration::from_secs(10);

/// Long runs say how far they are every this many executions (on stderr).
pub const PROGRESS: u64 = 500_000;

/// The artifacts the checksum target asks each file for (those the seeds name).
pub const CHECKSUM_NAMES: &[&str] = &[
    "kubectl",
    "etcd-v3.5.16-linux-amd64.tar.gz",
    "containerd-1.7.23-linux-amd64.tar.gz",
    "cni-plugins-linux-amd64-v1.4.0.tgz",
];

/// The fuzzer's directory (`fuzz/` at the repository root).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// A fuzz target: a name, its seeds and dictionary, and the function that runs one input.
pub struct Target {
    /// Its name (`manifest`, `archive`…), also its corpus and dictionary directory names.
    pub name: &'static str,
    /// Calls the parser on one input and checks its invariants; panics on a violation.
    pub run: fn(&[u8], &mut Scratch),
    /// Inputs are text: mutated bytes are made valid UTF-8 before [`Target::run`] sees them.
    pub text: bool,
    /// Inputs are `.tar.gz`: mutations apply to the tar inside, recompressed, most of the time.
    pub tar_gz: bool,
}

/// Per-run state a target may keep between executions (a scratch directory on tmpfs).
pub struct Scratch {
    /// A directory of this run's own.
    pub dir: tempfile::TempDir,
    /// Executions so far (for unique names).
    pub n: u64,
}

impl Scratch {
    fn new() -> Scratch {
        // tmpfs when there is one: the archive target writes and removes a tree per execution.
        let base = Path::new("/dev/shm");
        let dir = if base.is_dir() {
            tempfile::Builder::new()
                .prefix("kbin-fuzz-")
                .tempdir_in(base)
        } else {
            tempfile::Builder::new().prefix("kbin-fuzz-").tempdir()
        };
        Scratch {
            dir: dir.expect("a scratch directory for the fuzzer"),
            n: 0,
        }
    }
}

/// Every target, in the order issue 15 lists them.
pub fn targets() -> Vec<Target> {
    vec![
        Target {
            name: "manifest",
            run: targets::manifest,
            text: true,
            tar_gz: false,
        },
        Target {
            name: "manifest-overlay",
            run: targets::manifest_overlay,
            text: true,
            tar_gz: false,
        },
        Target {
            name: "checksum",
            run: targets::checksum,
            text: true,
            tar_gz: false,
        },
        Target {
            name: "archive",
            run: targets::archive,
            text: false,
            tar_gz: true,
        },
        Target {
            name: "spec",
            run: targets::spec,
            text: true,
            tar_gz: false,
        },
        Target {
            name: "lock",
            run: targets::lock,
            text: true,
            tar_gz: false,
        },
    ]
}

/// The files of `fuzz/<sub>/<target>/`, sorted (none when the directory is absent).
pub fn files(sub: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = root().join(sub).join(target);
    let mut out: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .map(|e| {
                    let bytes = std::fs::read(e.path()).expect("a readable corpus file");
                    (e.path(), bytes)
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Dictionary tokens of `target`: one a line, `#` lines are comments, `\n`, `\t`, `\0`, `\\`
/// and `\xHH` escapes.
pub fn dictionary(target: &str) -> Vec<Vec<u8>> {
    let path = root().join("dict").join(format!("{target}.dict"));
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(unescape)
        .collect()
}

fn unescape(line: &str) -> Vec<u8> {
    let b = line.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            match b[i + 1] {
                b'n' => out.push(b'\n'),
                b't' => out.push(b'\t'),
                b'0' => out.push(0),
                b'\\' => out.push(b'\\'),
                b'x' if i + 3 < b.len() => {
                    let hex = std::str::from_utf8(&b[i + 2..i + 4]).unwrap_or("");
                    out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                    i += 2;
                }
                other => out.push(other),
            }
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// A small fast generator (xorshift64*): mutation needs speed, not quality.
pub struct Rng(u64);

impl Rng {
    /// Seeded; 0 is replaced (xorshift never leaves 0).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform below `n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    /// True with probability 1/n.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
}

const SPECIAL: &[u8] = b"\"'=[]{},.\n\t #\\:/-+_*()<>0123456789\x00\x7f\x80\xff";
const NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1",
    "255",
    "65535",
    "4294967296",
    "9223372036854775807",
    "-9223372036854775808",
    "99999999999999999999999",
    "1e309",
    "nan",
    "inf",
    "0x7fffffff",
    "0o777",
    "1.0.0",
    "0.0.0",
    "18446744073709551615",
];

/// A mutation of `seeds[..]` into `out`: one to 16 stacked byte- and token-level edits.
pub fn mutate(rng: &mut Rng, seeds: &[Vec<u8>], dict: &[Vec<u8>], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&seeds[rng.below(seeds.len())]);
    let rounds = 1 << rng.below(5);
    for _ in 0..rounds {
        mutate_once(rng, seeds, dict, out);
    }
}

fn mutate_once(rng: &mut Rng, seeds: &[Vec<u8>], dict: &[Vec<u8>], out: &mut Vec<u8>) {
    let len = out.len();
    let pos = rng.below(len + 1);
    match rng.below(13) {
        0 if len > 0 => {
            let p = rng.below(len);
            out[p] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let p = rng.below(len);
            out[p] = rng.next() as u8;
        }
        2 if len > 0 => {
            let p = rng.below(len);
            out[p] = SPECIAL[rng.below(SPECIAL.len())];
        }
        3 if !dict.is_empty() => {
            let t = &dict[rng.below(dict.len())];
            out.splice(pos..pos, t.iter().copied());
        }
        4 if !dict.is_empty() => {
            let t = &dict[rng.below(dict.len())];
            let end = (pos + t.len()).min(len);
            out.splice(pos..end, t.iter().copied());
        }
        5 if len > 0 => {
            let n = 1 + rng.below(64.min(len));
            let a = rng.below(len - n + 1);
            out.drain(a..a + n);
        }
        6 if len > 0 => {
            let n = 1 + rng.below(128.min(len));
            let a = rng.below(len - n + 1);
            let chunk = out[a..a + n].to_vec();
            out.splice(pos..pos, chunk);
        }
        7 => {
            let n = 1 + rng.below(8);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            out.splice(pos..pos, bytes);
        }
        8 => {
            // Crossover: a chunk of another seed.
            let other = &seeds[rng.below(seeds.len())];
            if !other.is_empty() {
                let n = 1 + rng.below(256.min(other.len()));
                let a = rng.below(other.len() - n + 1);
                out.splice(pos..pos, other[a..a + n].iter().copied());
            }
        }
        9 => {
            // A number replaced by an interesting one.
            if let Some(start) = (pos..len).find(|&i| out[i].is_ascii_digit()) {
                let end = (start..len)
                    .find(|&i| !out[i].is_ascii_digit())
                    .unwrap_or(len);
                let n = NUMBERS[rng.below(NUMBERS.len())].as_bytes();
                out.splice(start..end, n.iter().copied());
            }
        }
        10 => {
            // Two lines swapped, or one duplicated: TOML tables move around.
            let lines: Vec<usize> = std::iter::once(0)
                .chain(
                    out.iter()
                        .enumerate()
                        .filter(|(_, b)| **b == b'\n')
                        .map(|(i, _)| i + 1),
                )
                .filter(|&i| i < len)
                .collect();
            if lines.len() >= 2 {
                let a = lines[rng.below(lines.len())];
                let a_end = out[a..]
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(len, |p| a + p + 1);
                let line = out[a..a_end].to_vec();
                let b = lines[rng.below(lines.len())];
                if rng.one_in(2) {
                    out.drain(a..a_end);
                    let b = b.min(out.len());
                    out.splice(b..b, line);
                } else {
                    out.splice(b..b, line);
                }
            }
        }
        11 => out.truncate(pos),
        _ => {
            // A byte repeated: long runs find quadratic paths.
            if len > 0 {
                let p = rng.below(len);
                let max = if rng.one_in(16) { 4096 } else { 32 };
                let n = 1 + rng.below(max);
                let b = out[p];
                out.splice(p..p, std::iter::repeat_n(b, n));
            }
        }
    }
}

/// The tar header fields a structure-aware mutation writes into: (offset, length).
const TAR_FIELDS: &[(usize, usize)] = &[
    (0, 100),   // name
    (100, 8),   // mode
    (124, 12),  // size
    (156, 1),   // typeflag
    (157, 100), // linkname
    (345, 155), // prefix
];

/// Offsets of the blocks of `tar` that look like headers (ustar magic).
fn tar_headers(tar: &[u8]) -> Vec<usize> {
    (0..tar.len() / 512)
        .map(|i| i * 512)
        .filter(|&o| &tar[o + 257..o + 262] == b"ustar")
        .collect()
}

/// Set the checksum of every header block, as a writer would.
pub fn fix_tar_checksums(tar: &mut [u8]) {
    for o in tar_headers(tar) {
        let h = &mut tar[o..o + 512];
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    }
}

/// A tar-aware mutation: a header field gets a dictionary token, an interesting size or type.
fn mutate_tar_header(rng: &mut Rng, dict: &[Vec<u8>], tar: &mut [u8]) {
    let headers = tar_headers(tar);
    if headers.is_empty() {
        return;
    }
    let h = headers[rng.below(headers.len())];
    let (off, len) = TAR_FIELDS[rng.below(TAR_FIELDS.len())];
    let field = &mut tar[h + off..h + off + len];
    let value: Vec<u8> = match (off, rng.below(3)) {
        (156, _) => vec![b"0125LKxgS7\0 3461"[rng.below(16)]],
        (124, 0) => b"77777777777\0".to_vec(),
        (124, 1) => format!("{:011o}\0", rng.below(1 << 20)).into_bytes(),
        (124, _) => {
            let mut v = vec![0x80u8; 12];
            for b in &mut v[4..] {
                *b = rng.next() as u8;
            }
            v
        }
        _ if !dict.is_empty() => dict[rng.below(dict.len())].clone(),
        _ => vec![rng.next() as u8],
    };
    let n = value.len().min(len);
    field[..n].copy_from_slice(&value[..n]);
    if n < len {
        field[n] = 0;
    }
}

/// What one fuzzing run did.
#[derive(Debug, Clone)]
pub struct Report {
    /// The target.
    pub target: &'static str,
    /// Executions.
    pub execs: u64,
    /// Wall time.
    pub secs: f64,
    /// Crashes (panics) found, saved under `fuzz/crashes/<target>/`.
    pub crashes: Vec<PathBuf>,
}

/// Save a failing input under `fuzz/crashes/<target>/`, named by its content.
fn save_crash(target: &str, input: &[u8], kind: &str) -> PathBuf {
    use sha2::Digest as _;
    let dir = root().join("crashes").join(target);
    let _ = std::fs::create_dir_all(&dir);
    let name = format!("{kind}-{}", &hex::encode(sha2::Sha256::digest(input))[..16]);
    let path = dir.join(name);
    let _ = std::fs::write(&path, input);
    path
}

/// Decompress a `.tar.gz` seed (the mutator edits the tar and recompresses it); a seed that is
/// not gzip stays as it is.
fn gunzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    let mut d = flate2::read::MultiGzDecoder::new(bytes);
    match d.read_to_end(&mut out) {
        Ok(_) => out,
        Err(_) => bytes.to_vec(),
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).expect("gzip into memory");
    gz.finish().expect("gzip into memory")
}

/// Run `target` for `execs` executions in all or until `deadline`, whichever comes first, on
/// `jobs` threads, mutating from `seed` (worker `i` from `seed + i`). Crashes are saved and
/// reported; a hang saves the input and exits the process (status 3): an in-process hang
/// cannot be interrupted.
pub fn fuzz(
    target: &Target,
    execs: u64,
    deadline: Option<Duration>,
    seed: u64,
    jobs: u64,
) -> Report {
    let seeds: Vec<Vec<u8>> = files("corpus", target.name)
        .into_iter()
        .map(|(_, b)| if target.tar_gz { gunzip(&b) } else { b })
        .collect();
    assert!(
        !seeds.is_empty(),
        "fuzz/corpus/{}/ has no seeds",
        target.name
    );
    let dict = dictionary(target.name);
    let done = AtomicU64::new(0);
    let started = Instant::now();
    quiet_panics_on_fuzz_threads();
    let crashes: Vec<PathBuf> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..jobs.max(1))
            .map(|i| {
                let (seeds, dict, done) = (&seeds, &dict, &done);
                s.spawn(move || {
                    worker(
                        target,
                        seeds,
                        dict,
                        done,
                        execs,
                        deadline,
                        seed.wrapping_add(i),
                    )
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("fuzz workers catch panics"))
            .collect()
    });
    Report {
        target: target.name,
        execs: done.load(Ordering::Relaxed),
        secs: started.elapsed().as_secs_f64(),
        crashes,
    }
}

thread_local! {
    /// This thread runs fuzz inputs: its panics are crashes the harness reports itself.
    static FUZZING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A panic hook that says nothing for fuzz threads (thousands of expected messages otherwise)
/// and defers to the previous hook elsewhere (other tests in the same binary keep theirs).
fn quiet_panics_on_fuzz_threads() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !FUZZING.with(|f| f.get()) {
                previous(info);
            }
        }));
    });
}

/// One fuzzing thread: mutate, run, until `done` reaches `execs` or `deadline` passes.
fn worker(
    target: &Target,
    seeds: &[Vec<u8>],
    dict: &[Vec<u8>],
    done: &AtomicU64,
    execs: u64,
    deadline: Option<Duration>,
    seed: u64,
) -> Vec<PathBuf> {
    FUZZING.with(|f| f.set(true));
    let mut rng = Rng::new(seed);
    let mut scratch = Scratch::new();
    let current: Arc<Mutex<Vec<u8>>> = Arc::default();
    let progress = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let (current, progress, stop, name) =
            (current.clone(), progress.clone(), stop.clone(), target.name);
        std::thread::spawn(move || {
            let mut last = (u64::MAX, Instant::now());
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                let p = progress.load(Ordering::Relaxed);
                if p != last.0 {
                    last = (p, Instant::now());
                } else if last.1.elapsed() > HANG {
                    let input = current.lock().map(|c| c.clone()).unwrap_or_default();
                    let path = save_crash(name, &input, "hang");
                    eprintln!(
                        "{name}: an execution ran for more than {HANG:?}: saved {}",
                        path.display()
                    );
                    std::process::exit(3);
                }
            }
        })
    };
    let started = Instant::now();
    let mut crashes = Vec::new();
    let mut buf = Vec::new();
    let mut input = Vec::new();
    let mut mine = 0u64;
    loop {
        if mine.is_multiple_of(16) && deadline.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        let n = done.fetch_add(1, Ordering::Relaxed);
        if n >= execs {
            done.fetch_sub(1, Ordering::Relaxed);
            break;
        }
        if n > 0 && n.is_multiple_of(PROGRESS) {
            eprintln!(
                "{}: {n} execs in {:.0} s",
                target.name,
                started.elapsed().as_secs_f64()
            );
        }
        mutate(&mut rng, seeds, dict, &mut buf);
        input.clear();
        if target.tar_gz {
            if rng.one_in(5) {
                // The gzip stream itself (seeds are stored decompressed: compress first).
                let mut gz = gzip(&seeds[rng.below(seeds.len())]);
                let mut r2 = Rng::new(rng.next());
                let mut scratch_buf = Vec::new();
                mutate(&mut r2, &[gz.clone()], &[], &mut scratch_buf);
                std::mem::swap(&mut gz, &mut scratch_buf);
                input.extend_from_slice(&gz);
            } else {
                if rng.one_in(2) {
                    buf.clear();
                    buf.extend_from_slice(&seeds[rng.below(seeds.len())]);
                    for _ in 0..1 + rng.below(4) {
                        mutate_tar_header(&mut rng, dict, &mut buf);
                    }
                }
                if !rng.one_in(8) {
                    fix_tar_checksums(&mut buf);
                }
                input.extend_from_slice(&gzip(&buf));
            }
        } else if target.text {
            input.extend_from_slice(String::from_utf8_lossy(&buf).as_bytes());
        } else {
            input.extend_from_slice(&buf);
        }
        if let Ok(mut c) = current.lock() {
            c.clear();
            c.extend_from_slice(&input);
        }
        scratch.n = mine;
        if let Err(msg) = run_once(target, &input, &mut scratch) {
            let path = save_crash(target.name, &input, "crash");
            eprintln!("{}: crash ({msg}): saved {}", target.name, path.display());
            crashes.push(path);
        }
        mine += 1;
        progress.store(mine, Ordering::Relaxed);
    }
    stop.store(true, Ordering::Relaxed);
    let _ = watchdog.join();
    crashes
}

/// Run `target` on `input`; a panic is its message, and a fresh `scratch` (a crash may leave
/// the old one in any state).
fn run_once(target: &Target, input: &[u8], scratch: &mut Scratch) -> Result<(), String> {
    let r = std::panic::catch_unwind(AssertUnwindSafe(|| (target.run)(input, scratch)));
    r.map_err(|p| {
        *scratch = Scratch::new();
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default()
    })
}

/// Run `target` once on each of `inputs`, returning the ones that panic.
pub fn replay(target: &Target, inputs: &[(PathBuf, Vec<u8>)]) -> Vec<(PathBuf, String)> {
    let mut scratch = Scratch::new();
    let mut failed = Vec::new();
    for (path, bytes) in inputs {
        if let Err(msg) = run_once(target, bytes, &mut scratch) {
            failed.push((path.clone(), msg));
        }
    }
    failed
}

/// The targets: each calls kbin's parser the way kbin does and checks what must hold.
pub mod targets {
    use super::Scratch;
    use std::path::{Component, Path};

    fn text(input: &[u8]) -> &str {
        std::str::from_utf8(input).unwrap_or("")
    }

    /// The manifest loader (`--manifest FILE`), on kbin's own manifest cut to size.
    pub fn manifest(input: &[u8], _: &mut Scratch) {
        let t = text(input);
        let a = kbin::manifest::Manifest::parse(t, kbin::manifest::Origin::Embedded);
        if let Ok(m) = a {
            resolve_all(&m);
        }
    }

    /// Whatever the loader accepts is usable: `latest` and every minor resolve or say why not
    /// (resolution trusts the references the loader checked).
    fn resolve_all(m: &kbin::manifest::Manifest) {
        let minors = m.releases.keys().map(|k| k.to_string());
        for version in std::iter::once("latest".to_owned()).chain(minors) {
            let request = kbin::manifest::resolve::Request {
                version,
                overrides: Vec::new(),
                allow_skew: false,
            };
            let _ = kbin::manifest::resolve::resolve(m, &request);
        }
    }

    /// The same loader on a second file: an overlay (what `kbin update` writes: newer releases
    /// and pins on top of the components).
    pub fn manifest_overlay(input: &[u8], _: &mut Scratch) {
        let t = text(input);
        let a =
            kbin::manifest::Manifest::parse(t, kbin::manifest::Origin::File("overlay.toml".into()));
        if let Ok(m) = a {
            resolve_all(&m);
        }
    }

    /// Upstream checksum files; a digest found is one the text holds.
    pub fn checksum(input: &[u8], _: &mut Scratch) {
        let t = text(input);
        for name in super::CHECKSUM_NAMES {
            if let Some(d) = kbin::fetch::digest_in_checksum_file(t, name) {
                let hex = d.to_string();
                let hex = hex.split_once(':').map_or(hex.as_str(), |(_, h)| h);
                assert!(
                    t.to_ascii_lowercase().contains(hex),
                    "digest {d} is not in the text"
                );
            }
        }
    }

    /// The cluster spec: `cluster.toml` as `gen cluster` reads it, then validated.
    pub fn spec(input: &[u8], _: &mut Scratch) {
        let t = text(input);
        if let Ok(input) = toml::from_str::<kbin::r#gen::spec::SpecInput>(t) {
            let _ = input.build();
        }
    }

    /// toolchain.lock: what parses serializes back to the same receipt.
    pub fn lock(input: &[u8], _: &mut Scratch) {
        let t = text(input);
        if let Ok(r) = kbin::toolchain::receipt::Receipt::parse(t, Path::new("toolchain.lock")) {
            let again = kbin::toolchain::receipt::Receipt::parse(&r.to_toml(), Path::new("again"))
                .expect("a receipt kbin writes parses");
            assert_eq!(again, r, "a receipt changes when written and read back");
        }
    }

    /// `.tar.gz` extraction, whole-tree and by member: nothing lands outside the target, links
    /// stay inside, a refused archive leaves nothing behind.
    pub fn archive(input: &[u8], s: &mut Scratch) {
        let root = s.dir.path();
        let file = root.join("a.tar.gz");
        std::fs::write(&file, input).expect("write the archive to scratch");
        let limits = kbin::archive::Limits {
            max_bytes: 1 << 20,
            max_entries: 64,
        };
        let area = root.join("area");
        if s.n == 0 || !area.is_dir() {
            std::fs::create_dir_all(&area).expect("scratch area");
        }
        let dest = area.join("tree");
        let whole = kbin::archive::extract_tar_gz(&file, &dest, &limits);
        check_area(&area, &["tree"]);
        match &whole {
            Ok(_) => check_tree(&dest),
            Err(_) => assert!(!dest.exists(), "a refused archive left {}", dest.display()),
        }
        let out = area.join("members");
        let wanted = [
            "etcd-v3.5.16-linux-amd64/etcd",
            "./bridge",
            "bin/ctr",
            "crictl",
        ];
        let members = kbin::archive::extract_members(&file, &wanted, &out, &limits);
        check_area(&area, &["tree", "members"]);
        if let Ok(ms) = &members {
            for m in ms {
                assert!(
                    m.path.starts_with(&out),
                    "member {} outside",
                    m.path.display()
                );
                let bytes = std::fs::read(&m.path).expect("a member extracted is readable");
                assert_eq!(bytes.len() as u64, m.size, "member size");
                assert_eq!(
                    kbin::manifest::Digest::sha256_of(&{
                        use sha2::Digest as _;
                        sha2::Sha256::digest(&bytes)
                    }),
                    m.sha256,
                    "member digest"
                );
            }
            check_tree(&out);
        }
        // Both extractions judge every entry alike: where neither stopped for a reason of its
        // own (a member that is not a file, a limit, a local I/O error), they agree.
        let (a, b) = (class(&whole.map(|_| ())), class(&members.map(|_| ())));
        if a != "own" && b != "own" {
            assert_eq!(a, b, "whole extraction: {a}, extract_members: {b}");
        }
        for made in [&dest, &out] {
            if made.exists() {
                std::fs::remove_dir_all(made).expect("clean the scratch area");
            }
        }
    }

    /// What an extraction's result says about the archive itself.
    fn class(r: &Result<(), kbin::archive::ArchiveError>) -> &'static str {
        use kbin::archive::ArchiveError as E;
        match r {
            Ok(()) => "accepted",
            Err(E::Unsafe { .. } | E::Unsupported { .. }) => "refused",
            Err(E::Corrupt { .. }) => "corrupt",
            Err(_) => "own",
        }
    }

    /// Only `allowed` names (and no stray temporary directory) in `area`.
    fn check_area(area: &Path, allowed: &[&str]) {
        for e in std::fs::read_dir(area).expect("scratch area").flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(
                allowed.contains(&name.as_str()),
                "stray {name} next to the target"
            );
        }
        for e in std::fs::read_dir(area.parent().expect("area has a parent"))
            .expect("scratch dir")
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(
                name == "a.tar.gz" || name == "area",
                "{name} written outside the target"
            );
        }
    }

    /// Every symlink under `dir` resolves (lexically) inside it.
    fn check_tree(dir: &Path) {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                let ft = e.file_type().expect("file type");
                if ft.is_dir() {
                    stack.push(p);
                } else if ft.is_symlink() {
                    let target = std::fs::read_link(&p).expect("a link");
                    assert!(!target.is_absolute(), "absolute link {}", p.display());
                    let mut depth = p
                        .parent()
                        .expect("parent")
                        .strip_prefix(dir)
                        .expect("under dir")
                        .components()
                        .count() as i64;
                    for c in target.components() {
                        match c {
                            Component::ParentDir => depth -= 1,
                            Component::Normal(_) => depth += 1,
                            _ => {}
                        }
                        assert!(depth >= 0, "link {} escapes", p.display());
                    }
                }
            }
        }
    }
}
