//! Where a replayed record goes: chosen by the replay, not the producer, so a resumed replay
//! knows where a crashed run wrote.

use kafka_ops_core::Record;
use kafka_ops_core::dead_letter::headers::DeadLetterInfo;

/// The original partition when the destination has it (the key keeps the partition its
/// producer chose), else by key with Kafka's default partitioner (murmur2, as the Java client),
/// else by source offset. Chosen here, not by the producer, so a resumed replay knows where a
/// crashed batch wrote.
pub(super) fn target_partition(record: &Record<'_>, info: &DeadLetterInfo, count: i32) -> i32 {
    if let Some(partition) = info.original_partition.filter(|p| (0..count).contains(p)) {
        return partition;
    }
    let count_u32 = u32::try_from(count.max(1)).unwrap_or(1);
    let spread = match record.key() {
        Some(key) => murmur2(key) & 0x7fff_ffff,
        None => (record.offset.get().unsigned_abs() % u64::from(count_u32)) as u32,
    };
    i32::try_from(spread % count_u32).unwrap_or(0)
}

/// Kafka's murmur2 (the Java client's default partitioner hash).
pub(super) fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len();
    let mut h = SEED ^ (length as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}
