//! Payload masking (RFC 6455 §5.3): XOR with a 4-byte key, in place.

/// XORs `buf` with `mask`, as if `buf` started at payload offset 0.
///
/// Works on 8-byte words through safe slices (no `unsafe`): the key is
/// repeated twice into a `u64`, which is valid for every word because each
/// word starts at an offset that is a multiple of 4 into the payload.
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4]) {
    let key = u64::from_ne_bytes([mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3]]);
    let mut words = buf.chunks_exact_mut(8);
    for word in &mut words {
        let v = u64::from_ne_bytes([word[0], word[1], word[2], word[3], word[4], word[5], word[6], word[7]]) ^ key;
        word.copy_from_slice(&v.to_ne_bytes());
    }
    // The tail starts at a multiple of 8, so the key index restarts at 0.
    for (i, b) in words.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn simple(buf: &mut [u8], mask: [u8; 4]) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }

    #[test]
    fn matches_the_byte_at_a_time_definition_at_every_length_and_alignment() {
        let mask = [0x6d, 0xb6, 0xb2, 0x80];
        let data: Vec<u8> = (0..100u8).collect();
        for start in 0..8 {
            for len in 0..(data.len() - start) {
                let mut a = data[start..start + len].to_vec();
                let mut b = a.clone();
                apply_mask(&mut a, mask);
                simple(&mut b, mask);
                assert_eq!(a, b, "start {start} len {len}");
            }
        }
    }

    #[test]
    fn masking_twice_is_the_identity() {
        let mut buf = b"Hello, masked world!".to_vec();
        apply_mask(&mut buf, [1, 2, 3, 4]);
        assert_ne!(&buf[..], b"Hello, masked world!");
        apply_mask(&mut buf, [1, 2, 3, 4]);
        assert_eq!(&buf[..], b"Hello, masked world!");
    }
}
