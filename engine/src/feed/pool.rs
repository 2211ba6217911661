//! A pool of small frame buffers: frames are copied (or written) back to back into chunks of
//! a few KiB and handed out as `Bytes`, so a frame kept in a queue pins its own bytes and a
//! small chunk, not the WebSocket layer's 128 KiB receive buffer it arrived in.
//!
//! Why: tungstenite hands each message out as a slice of its receive buffer. A slice keeps the
//! whole buffer alive, so a consumer lagging behind, or holding a few trades for a repair, pins
//! 128 KiB per buffer while its accounting counts the frames' bytes; and while any slice lives
//! tungstenite cannot reuse the buffer, so it allocates a fresh one for every 128 KiB received.
//! A frame copied here lets the receive buffer be reused at once.
//!
//! How (no allocation per frame): [`FramePool::copy`] appends the frame to the current chunk
//! (a `BytesMut`) and cuts it off with `split().freeze()`: one copy and one reference count.
//! When the chunk is full it is retired, and the oldest retired chunk whose frames have all
//! been dropped is reclaimed in place (`BytesMut::try_reclaim`, no allocation); only when
//! none is free is a new chunk allocated (one allocation per chunk, a few hundred frames). The
//! pool keeps at most `chunks_max` retired chunks: beyond, it lets go of the oldest, whose
//! memory returns to the allocator when its last frame is dropped. A frame larger than a
//! quarter of a chunk gets a buffer of its own (one allocation; such frames are rare and large,
//! so the copy dominates).
//!
//! Producers that build a frame in place (JSON to SBE) use [`FramePool::start`] and
//! [`FramePool::finish`] instead of `copy`. A pool belongs to one thread (`&mut self`); the
//! frames it hands out go anywhere.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

/// Bytes per chunk unless the caller says otherwise: a few hundred typical frames (trades,
/// best bid/ask and depth diffs are 50-700 bytes), small enough that a frame held for long
/// pins little besides itself.
pub const CHUNK_BYTES: usize = 32 << 10;

/// Retired chunks a pool keeps for reuse unless the caller says otherwise (2 MiB of 32 KiB
/// chunks: what consumers hold in the steady state, well beyond a read batch).
pub const CHUNKS_MAX: usize = 64;

/// What a pool has done, for tests and benches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolCounts {
    /// Chunks allocated (the first one included).
    pub chunks_allocated: u64,
    /// Chunks reused in place after all their frames were dropped.
    pub chunks_reused: u64,
    /// Frames too large for a chunk, given a buffer of their own.
    pub oversize: u64,
}

/// A pool of frame buffers owned by one thread. See the module documentation.
#[derive(Debug)]
pub struct FramePool {
    /// Where the next frame goes: the unused tail of a chunk (`len() == 0` between frames,
    /// apart from a frame being written between `start` and `finish`).
    current: BytesMut,
    /// Full chunks, oldest first; each is reclaimed once every frame cut from it is dropped.
    retired: VecDeque<BytesMut>,
    /// A frame too large for a chunk, between `start` and `finish`.
    large: Option<BytesMut>,
    chunk_bytes: usize,
    chunks_max: usize,
    counts: PoolCounts,
}

impl Default for FramePool {
    fn default() -> Self {
        FramePool::new(CHUNK_BYTES, CHUNKS_MAX)
    }
}

impl FramePool {
    /// A pool of `chunk_bytes` chunks (at least 1 KiB) keeping up to `chunks_max` retired ones.
    /// Allocates the first chunk and the retired queue now, so frames never wait on the
    /// allocator in the steady state.
    pub fn new(chunk_bytes: usize, chunks_max: usize) -> FramePool {
        assert!(chunk_bytes >= 1024, "chunks hold several frames");
        FramePool {
            current: BytesMut::with_capacity(chunk_bytes),
            retired: VecDeque::with_capacity(chunks_max + 1),
            large: None,
            chunk_bytes,
            chunks_max,
            counts: PoolCounts {
                chunks_allocated: 1,
                ..PoolCounts::default()
            },
        }
    }

    /// The largest frame that shares a chunk; larger ones get their own buffer.
    #[inline]
    pub fn shared_bytes_max(&self) -> usize {
        self.chunk_bytes / 4
    }

    /// What the pool has done so far.
    pub fn counts(&self) -> PoolCounts {
        self.counts
    }

    /// Bytes of the chunks the pool keeps (current and retired), whether or not frames still
    /// use them.
    pub fn kept_bytes(&self) -> usize {
        (self.retired.len() + 1) * self.chunk_bytes
    }

    /// A copy of `frame` in the pool.
    #[inline]
    pub fn copy(&mut self, frame: &[u8]) -> Bytes {
        self.start(frame.len()).extend_from_slice(frame);
        self.finish()
    }

    /// An empty buffer with room for at least `len_max` bytes, to write one frame into; then
    /// [`FramePool::finish`] hands it out. Writing more than `len_max` bytes is correct but
    /// may allocate.
    #[inline]
    pub fn start(&mut self, len_max: usize) -> &mut BytesMut {
        debug_assert!(self.current.is_empty(), "one frame at a time");
        if len_max > self.shared_bytes_max() {
            // A buffer of its own, dropped with the frame; the current chunk stays current.
            self.counts.oversize += 1;
            return self.large.insert(BytesMut::with_capacity(len_max));
        }
        if self.current.capacity() < len_max {
            self.next_chunk();
        }
        &mut self.current
    }

    /// The frame written since [`FramePool::start`].
    #[inline]
    pub fn finish(&mut self) -> Bytes {
        match self.large.take() {
            Some(large) => large.freeze(),
            None => self.current.split().freeze(),
        }
    }

    /// Abandons the frame written since [`FramePool::start`] (it could not be completed): its
    /// bytes are reused by the next frame.
    #[inline]
    pub fn cancel(&mut self) {
        self.large = None;
        self.current.clear();
    }

    /// Retires the current chunk and makes a chunk with room for a shared frame current.
    #[cold]
    fn next_chunk(&mut self) {
        self.retired.push_back(std::mem::take(&mut self.current));
        // The oldest chunks are the likeliest free (consumers drop frames in order); one that
        // is still in use goes to the back so it cannot block the others.
        for _ in 0..2.min(self.retired.len()) {
            let Some(mut chunk) = self.retired.pop_front() else {
                break;
            };
            if chunk.try_reclaim(self.chunk_bytes) {
                self.counts.chunks_reused += 1;
                self.current = chunk;
                return;
            }
            self.retired.push_back(chunk);
        }
        while self.retired.len() > self.chunks_max {
            // Its memory is freed when its last frame is dropped.
            self.retired.pop_front();
        }
        self.counts.chunks_allocated += 1;
        self.current = BytesMut::with_capacity(self.chunk_bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(i: usize, len: usize) -> Vec<u8> {
        (0..len).map(|j| (i + j) as u8).collect()
    }

    #[test]
    fn copies_are_equal_to_their_frames_and_independent_of_them() {
        let mut pool = FramePool::new(1024, 4);
        let frames: Vec<Vec<u8>> = (0..100).map(|i| frame(i, 1 + i % 200)).collect();
        let copies: Vec<Bytes> = frames.iter().map(|f| pool.copy(f)).collect();
        for (f, c) in frames.iter().zip(&copies) {
            assert_eq!(&f[..], &c[..]);
        }
        assert_eq!(pool.copy(&[]), Bytes::new(), "an empty frame stays empty");
    }

    #[test]
    fn chunks_are_reused_once_their_frames_are_dropped() {
        let mut pool = FramePool::new(1024, 4);
        // Frames dropped at once, as a consumer keeping up does: one chunk serves them all.
        for i in 0..10_000 {
            let copy = pool.copy(&frame(i, 100));
            assert_eq!(copy.len(), 100);
        }
        let counts = pool.counts();
        assert_eq!(counts.chunks_allocated, 1, "{counts:?}");
        assert!(counts.chunks_reused >= 900, "{counts:?}");
    }

    #[test]
    fn held_frames_keep_their_chunks_and_a_new_one_is_allocated() {
        let mut pool = FramePool::new(1024, 4);
        // A lagging consumer holds 50 frames: five chunks' worth of 200-byte frames.
        let held: Vec<Bytes> = (0..25).map(|i| pool.copy(&frame(i, 200))).collect();
        assert!(pool.counts().chunks_allocated >= 5, "{:?}", pool.counts());
        for (i, h) in held.iter().enumerate() {
            assert_eq!(&h[..], &frame(i, 200)[..], "held frames are intact");
        }
        let allocated = pool.counts().chunks_allocated;
        drop(held);
        // Everything released: the retired chunks are reused, nothing new is allocated.
        for i in 0..1000 {
            let _ = pool.copy(&frame(i, 200));
        }
        assert_eq!(
            pool.counts().chunks_allocated,
            allocated,
            "{:?}",
            pool.counts()
        );
    }

    #[test]
    fn one_long_held_frame_does_not_stop_reuse_of_the_others() {
        let mut pool = FramePool::new(1024, 8);
        let pinned = pool.copy(&frame(7, 100));
        for i in 0..10_000 {
            let _ = pool.copy(&frame(i, 100));
        }
        assert_eq!(&pinned[..], &frame(7, 100)[..]);
        assert!(pool.counts().chunks_allocated <= 3, "{:?}", pool.counts());
    }

    #[test]
    fn the_pool_keeps_a_bounded_number_of_chunks() {
        let mut pool = FramePool::new(1024, 4);
        let held: Vec<Bytes> = (0..1000).map(|i| pool.copy(&frame(i, 200))).collect();
        assert!(pool.kept_bytes() <= 5 * 1024, "{}", pool.kept_bytes());
        assert!(
            held.iter()
                .enumerate()
                .all(|(i, h)| h[..] == frame(i, 200)[..])
        );
    }

    #[test]
    fn a_large_frame_gets_its_own_buffer_and_the_chunk_stays_current() {
        let mut pool = FramePool::new(1024, 4);
        let small = pool.copy(&frame(1, 100));
        let large = pool.copy(&frame(2, 5000));
        let after = pool.copy(&frame(3, 100));
        assert_eq!(&large[..], &frame(2, 5000)[..]);
        assert_eq!(&small[..], &frame(1, 100)[..]);
        assert_eq!(&after[..], &frame(3, 100)[..]);
        let counts = pool.counts();
        assert_eq!(counts.oversize, 1, "{counts:?}");
        assert_eq!(counts.chunks_allocated, 1, "{counts:?}");
    }

    #[test]
    fn a_frame_written_in_place_is_handed_out_whole() {
        let mut pool = FramePool::new(1024, 4);
        for i in 0..100 {
            let buf = pool.start(64);
            buf.extend_from_slice(b"header");
            buf.extend_from_slice(&frame(i, 50));
            let out = pool.finish();
            assert_eq!(&out[..6], b"header");
            assert_eq!(&out[6..], &frame(i, 50)[..]);
        }
        // Writing beyond what was asked is still correct.
        let buf = pool.start(10);
        buf.extend_from_slice(&frame(9, 3000));
        assert_eq!(&pool.finish()[..], &frame(9, 3000)[..]);
    }

    #[test]
    fn a_cancelled_frame_leaves_nothing_behind() {
        let mut pool = FramePool::new(1024, 4);
        pool.start(100).extend_from_slice(&frame(1, 100));
        pool.cancel();
        pool.start(5000).extend_from_slice(&frame(2, 5000));
        pool.cancel();
        let next = pool.copy(&frame(3, 50));
        assert_eq!(
            &next[..],
            &frame(3, 50)[..],
            "nothing of the cancelled frames"
        );
    }
}
