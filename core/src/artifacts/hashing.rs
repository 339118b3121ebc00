//! A SHA-256 whose state can be saved and restored: an upload that resumes in
//! a later attempt (from a job checkpoint) must finish with the digest of the
//! whole object, not only of the bytes this attempt wrote. The compression
//! function is sha2's (SHA-NI or SIMD where the CPU has them); this file only
//! keeps the chaining state, the unhashed tail and the length, and pads.

use serde::{Deserialize, Serialize};
use sha2::digest::generic_array::GenericArray;

const BLOCK: usize = 64;

const INITIAL_STATE: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumableSha256 {
    state: [u32; 8],
    /// Bytes not yet hashed (fewer than one block).
    tail: Vec<u8>,
    /// Bytes fed in all.
    len: u64,
}

impl Default for ResumableSha256 {
    fn default() -> Self {
        Self::new()
    }
}

impl ResumableSha256 {
    pub fn new() -> Self {
        Self {
            state: INITIAL_STATE,
            tail: Vec::with_capacity(BLOCK),
            len: 0,
        }
    }

    pub fn update(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len() as u64;
        if !self.tail.is_empty() {
            let take = (BLOCK - self.tail.len()).min(bytes.len());
            self.tail.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.tail.len() < BLOCK {
                return;
            }
            let block = std::mem::take(&mut self.tail);
            self.compress(&block);
            self.tail = block;
            self.tail.clear();
        }
        let whole = bytes.len() - bytes.len() % BLOCK;
        self.compress(&bytes[..whole]);
        self.tail.extend_from_slice(&bytes[whole..]);
    }

    fn compress(&mut self, blocks: &[u8]) {
        for block in blocks.chunks_exact(BLOCK) {
            sha2::compress256(
                &mut self.state,
                std::slice::from_ref(GenericArray::from_slice(block)),
            );
        }
    }

    /// The lower-case hex digest of everything fed in.
    pub fn finalize_hex(mut self) -> String {
        let bit_len = self.len.wrapping_mul(8);
        let mut padding = std::mem::take(&mut self.tail);
        padding.push(0x80);
        while padding.len() % BLOCK != BLOCK - 8 {
            padding.push(0);
        }
        padding.extend_from_slice(&bit_len.to_be_bytes());
        self.compress(&padding);
        self.state
            .iter()
            .map(|word| format!("{word:08x}"))
            .collect()
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn save(&self) -> HashState {
        HashState {
            state: self.state.iter().map(|w| format!("{w:08x}")).collect(),
            tail: super::hex(&self.tail),
            len: self.len,
        }
    }

    pub fn restore(saved: &HashState) -> Option<Self> {
        let words = saved.state.as_bytes();
        if words.len() != 64 {
            return None;
        }
        let mut state = [0u32; 8];
        for (i, word) in state.iter_mut().enumerate() {
            let text = std::str::from_utf8(&words[i * 8..i * 8 + 8]).ok()?;
            *word = u32::from_str_radix(text, 16).ok()?;
        }
        let tail = unhex(&saved.tail)?;
        if tail.len() >= BLOCK || saved.len % BLOCK as u64 != tail.len() as u64 {
            return None;
        }
        Some(Self {
            state,
            tail,
            len: saved.len,
        })
    }
}

/// The saved form of a [`ResumableSha256`] (kept in job checkpoints).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashState {
    /// The eight chaining words, hex.
    pub state: String,
    /// Unhashed bytes, hex.
    pub tail: String,
    pub len: u64,
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn reference(bytes: &[u8]) -> String {
        super::super::hex(&Sha256::digest(bytes))
    }

    #[test]
    fn matches_sha2_for_every_split_and_after_restore() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        for len in [0, 1, 55, 56, 63, 64, 65, 127, 128, 129, 1000] {
            let bytes = &data[..len];
            for split in [0, 1, 31, 64, len / 2, len] {
                let split = split.min(len);
                let mut hasher = ResumableSha256::new();
                hasher.update(&bytes[..split]);
                let saved = serde_json::to_value(hasher.save()).unwrap();
                let mut resumed =
                    ResumableSha256::restore(&serde_json::from_value(saved).unwrap()).unwrap();
                assert_eq!(resumed, hasher);
                resumed.update(&bytes[split..]);
                assert_eq!(resumed.len(), len as u64);
                assert_eq!(
                    resumed.finalize_hex(),
                    reference(bytes),
                    "len {len} split {split}"
                );
            }
        }
        // Many small writes land the same as one.
        let mut hasher = ResumableSha256::new();
        for chunk in data.chunks(7) {
            hasher.update(chunk);
        }
        assert_eq!(hasher.finalize_hex(), reference(&data));
    }

    #[test]
    fn rejects_a_corrupt_saved_state() {
        let mut hasher = ResumableSha256::new();
        hasher.update(b"abc");
        let good = hasher.save();
        assert!(ResumableSha256::restore(&good).is_some());
        let mut short = good.clone();
        short.state.pop();
        assert!(ResumableSha256::restore(&short).is_none());
        let mut wrong_len = good.clone();
        wrong_len.len = 4;
        assert!(ResumableSha256::restore(&wrong_len).is_none());
        let mut bad_hex = good;
        bad_hex.tail = "zz".into();
        assert!(ResumableSha256::restore(&bad_hex).is_none());
    }
}
