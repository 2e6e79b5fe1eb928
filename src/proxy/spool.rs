//! Where bodies wait between a fast side and a slow one, so that a node's
//! worker never waits on a visitor: a request body read whole before a
//! node is chosen ([`BodyBuffer`]), and a response read from the node as
//! fast as it comes while the visitor takes it at its own pace
//! ([`Spool`]). Each keeps up to a set number of bytes in memory and the
//! rest in a temporary file, unlinked as soon as it is made (nothing is
//! left behind, even by a crash).
//!
//! The files are read and written with positioned, blocking calls on the
//! worker thread, as nginx does with its temporary files: they go to the
//! page cache, and a thread hop per 64 KiB would cost more than the copy.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// How much is read back from a file at once.
const FILE_READ: usize = 64 * 1024;

/// Write `data` at `*end` of the temporary file (made in `dir` on first
/// use, unlinked at once), and move `*end` past it.
fn write_at(file: &mut Option<File>, dir: &Path, data: &[u8], end: &mut u64) -> io::Result<()> {
    let file = match file {
        Some(f) => f,
        None => file.insert(tempfile::tempfile_in(dir)?),
    };
    file.write_all_at(data, *end)?;
    *end += data.len() as u64;
    Ok(())
}

/// A request body read whole: memory first, then a temporary file. Read
/// back from any position, as often as a retry needs.
#[derive(Debug, Default)]
pub struct BodyBuffer {
    mem: Vec<u8>,
    file: Option<File>,
    file_len: u64,
}

impl BodyBuffer {
    /// Bytes held.
    pub fn len(&self) -> u64 {
        self.mem.len() as u64 + self.file_len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether part of the body is in a temporary file.
    pub fn in_file(&self) -> bool {
        self.file.is_some()
    }

    /// Append `data`: to memory while it holds less than `memory` bytes,
    /// then to a temporary file in `dir`.
    pub fn append(&mut self, data: &[u8], memory: usize, dir: &Path) -> io::Result<()> {
        if self.file.is_none() && self.mem.len() + data.len() <= memory {
            self.mem.extend_from_slice(data);
            return Ok(());
        }
        write_at(&mut self.file, dir, data, &mut self.file_len)
    }

    /// The bytes from `pos` on, as much as is at hand at once: a slice of
    /// memory, or up to 64 KiB read from the file into `scratch`.
    pub fn chunk<'a>(&'a self, pos: u64, scratch: &'a mut Vec<u8>) -> io::Result<&'a [u8]> {
        let mem = self.mem.len() as u64;
        if pos < mem {
            return Ok(&self.mem[pos as usize..]);
        }
        let at = pos - mem;
        let (Some(file), true) = (&self.file, at < self.file_len) else {
            return Ok(&[]);
        };
        let want = (self.file_len - at).min(FILE_READ as u64) as usize;
        scratch.resize(want, 0);
        file.read_exact_at(scratch, at)?;
        Ok(scratch)
    }
}

/// A response on its way to the visitor: what the node sent and the
/// visitor has not taken yet, in order. Memory up to a limit, then a
/// temporary file up to another; the reader of the node stops when both
/// are full ([`Spool::has_room`]).
#[derive(Debug)]
pub struct Spool {
    mem: Vec<u8>,
    start: usize,
    file: Option<File>,
    file_read: u64,
    file_write: u64,
    memory: usize,
    max_file: u64,
}

impl Spool {
    /// A spool that starts with `head` (the response head, sent with the
    /// first body bytes in one write), holding `memory` bytes in memory and
    /// `max_file` in a temporary file (0: none; the node is then read only
    /// as fast as the visitor takes it).
    pub fn new(head: Vec<u8>, memory: usize, max_file: u64) -> Spool {
        Spool {
            mem: head,
            start: 0,
            file: None,
            file_read: 0,
            file_write: 0,
            memory,
            max_file,
        }
    }

    fn mem_pending(&self) -> usize {
        self.mem.len() - self.start
    }

    fn file_pending(&self) -> u64 {
        self.file_write - self.file_read
    }

    /// Bytes waiting for the visitor.
    pub fn pending(&self) -> u64 {
        self.mem_pending() as u64 + self.file_pending()
    }

    pub fn is_empty(&self) -> bool {
        self.pending() == 0
    }

    /// Whether more may be read from the node now.
    pub fn has_room(&self) -> bool {
        self.pending() < self.memory as u64 + self.max_file
    }

    /// Bytes in the temporary file now.
    pub fn in_file(&self) -> u64 {
        self.file_pending()
    }

    /// Append what `produce` writes to the buffer it is given: straight
    /// into memory while the file is not in use and memory has room, else
    /// through `scratch` into the file (so that the order is kept: once the
    /// file holds bytes, newer ones go after them).
    pub fn append_with<T, E>(
        &mut self,
        scratch: &mut Vec<u8>,
        dir: &Path,
        produce: impl FnOnce(&mut Vec<u8>) -> Result<T, E>,
    ) -> Result<io::Result<T>, E> {
        if self.file_pending() == 0 && (self.mem_pending() < self.memory || self.max_file == 0) {
            if self.start > 0 && self.start == self.mem.len() {
                self.mem.clear();
                self.start = 0;
            }
            return produce(&mut self.mem).map(Ok);
        }
        scratch.clear();
        let out = produce(scratch)?;
        Ok(self.write_file(scratch, dir).map(|()| out))
    }

    /// Room for `n` more bytes in memory when none are pending there: a
    /// buffer of that size in place of a smaller one, so that
    /// [`Spool::append_with`] does not grow it by reallocations, each a
    /// copy of the whole old buffer (spent bytes included). Nothing changes
    /// while bytes are pending in memory or the file is in use.
    pub fn room_for(&mut self, n: usize) {
        if self.mem_pending() == 0 && self.file_pending() == 0 && self.mem.capacity() < n {
            self.mem = Vec::with_capacity(n);
            self.start = 0;
        }
    }

    fn write_file(&mut self, data: &[u8], dir: &Path) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        write_at(&mut self.file, dir, data, &mut self.file_write)
    }

    /// The next bytes for the visitor (empty when none wait); memory first,
    /// then the file, read back into memory a piece at a time.
    pub fn front(&mut self) -> io::Result<&[u8]> {
        if self.mem_pending() == 0 && self.file_pending() > 0 {
            let want = self.file_pending().min(FILE_READ as u64) as usize;
            self.mem.clear();
            self.mem.resize(want, 0);
            self.start = 0;
            if let Some(file) = &self.file {
                file.read_exact_at(&mut self.mem, self.file_read)?;
            }
            self.file_read += want as u64;
            if self.file_read == self.file_write {
                // Drained: the next bytes go to memory, after these.
                self.file_read = 0;
                self.file_write = 0;
            }
        }
        Ok(&self.mem[self.start..])
    }

    /// `n` bytes of [`Spool::front`] were sent.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.mem.len());
        if self.start == self.mem.len() {
            self.mem.clear();
            self.start = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(spool: &mut Spool, step: usize) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let front = spool.front().unwrap();
            if front.is_empty() {
                return out;
            }
            let n = front.len().min(step);
            out.extend_from_slice(&front[..n]);
            spool.consume(n);
        }
    }

    #[test]
    fn a_spool_keeps_the_order_through_memory_and_file() {
        let dir = std::env::temp_dir();
        let mut spool = Spool::new(b"HEAD".to_vec(), 16, 1 << 20);
        let mut scratch = Vec::new();
        let mut want = b"HEAD".to_vec();
        for i in 0..50u8 {
            let piece = vec![i; 7];
            want.extend_from_slice(&piece);
            spool
                .append_with(&mut scratch, &dir, |out| {
                    out.extend_from_slice(&piece);
                    Ok::<_, ()>(())
                })
                .unwrap()
                .unwrap();
            if i == 3 {
                assert!(
                    spool.in_file() > 0,
                    "memory full: the rest goes to the file"
                );
            }
            if i % 10 == 9 {
                // The visitor takes some: more arrives after.
                let front = spool.front().unwrap().len().min(5);
                let taken = spool.front().unwrap()[..front].to_vec();
                assert_eq!(taken, want[..front]);
                want.drain(..front);
                spool.consume(front);
            }
        }
        assert!(spool.has_room());
        assert_eq!(spool.pending(), want.len() as u64);
        assert_eq!(drain(&mut spool, 3), want);
        assert!(spool.is_empty());
        // Drained, it takes memory again.
        spool
            .append_with(&mut scratch, &dir, |out| {
                out.extend_from_slice(b"again");
                Ok::<_, ()>(())
            })
            .unwrap()
            .unwrap();
        assert_eq!(spool.in_file(), 0);
        assert_eq!(drain(&mut spool, 100), b"again");
    }

    #[test]
    fn without_a_file_the_spool_is_full_at_its_memory() {
        let dir = std::env::temp_dir();
        let mut spool = Spool::new(Vec::new(), 8, 0);
        let mut scratch = Vec::new();
        spool
            .append_with(&mut scratch, &dir, |out| {
                out.extend_from_slice(b"0123456789");
                Ok::<_, ()>(())
            })
            .unwrap()
            .unwrap();
        assert!(!spool.has_room());
        assert_eq!(spool.in_file(), 0);
        assert_eq!(drain(&mut spool, 4), b"0123456789");
        assert!(spool.has_room());
    }

    #[test]
    fn a_body_buffer_reads_back_from_memory_and_file() {
        let dir = std::env::temp_dir();
        let mut body = BodyBuffer::default();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        for piece in data.chunks(999) {
            body.append(piece, 4096, &dir).unwrap();
        }
        assert!(body.in_file());
        assert_eq!(body.len(), data.len() as u64);
        for _ in 0..2 {
            let mut back = Vec::new();
            let mut scratch = Vec::new();
            loop {
                let chunk = body.chunk(back.len() as u64, &mut scratch).unwrap();
                if chunk.is_empty() {
                    break;
                }
                let chunk = chunk.to_vec();
                back.extend_from_slice(&chunk);
            }
            assert_eq!(back, data, "read back whole, and again for a retry");
        }
    }
}
