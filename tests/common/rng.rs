//! Seeds and random numbers: every random choice of a test comes from a seed it prints on
//! failure, read from the environment to rerun it.

/// The number in the environment variable `name`, if set. Panics when it is set but not a
/// number: a mistyped seed must not silently run another test.
pub fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
    )
}

/// A seed from the clock, for tests that try a new seed on every run (and print it).
pub fn seed_from_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// splitmix64: small, seedable, good enough to pick delays, plans, offsets and bits.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    /// An index into something `len` long.
    pub fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }
}

/// One step of xorshift64 on `state` (never zero), which it returns: the generator of the
/// workloads of the crash tests, whose seeds name their runs.
pub fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// `len` pseudo-random letters from `seed`: data that compression cannot shrink, so it takes
/// that many bytes in a record.
pub fn incompressible(seed: u64, len: usize) -> String {
    let mut state = seed;
    (0..len)
        .map(|_| char::from(b'a' + (xorshift(&mut state) % 26) as u8))
        .collect()
}
