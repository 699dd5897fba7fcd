//! Where downloaded bytes go: one thread writes them to the temporary file while another hashes
//! them, so that receiving the next bytes waits on neither the disk nor SHA-256 (each costs
//! about as much time as a fast local download), and the two overlap. The writer also asks the
//! kernel to start writeback as it goes, so the fsync that makes the file durable finds little
//! left to do.

use std::{
    fs::File,
    io::{BufWriter, Seek, SeekFrom, Write},
    path::Path,
};

use bytes::{Bytes, BytesMut};
use sha2::{Digest as _, Sha256};
use tokio::sync::{mpsc, oneshot};

use super::digest::Digest;

const WRITE_BUFFER: usize = 1 << 20;
/// Network reads arrive in chunks of a few kilobytes to a few hundred; handing them over in
/// batches of this size keeps the cost of waking the threads negligible.
const BATCH: usize = 512 << 10;
/// Batches in flight between the download and each thread.
const QUEUE: usize = 16;
/// Bytes written between requests to start writeback.
const WRITEBACK_STEP: u64 = 8 << 20;

#[derive(Clone)]
enum Command {
    Data(Bytes),
    /// Start the file over (a server answered a range request with the whole file).
    Restart,
}

/// The complete file: its digest and length, fsynced.
pub(crate) struct Written {
    pub(crate) digest: Digest,
    pub(crate) size: u64,
}

/// A thread consuming commands, and where its result arrives.
struct Worker<T> {
    commands: mpsc::Sender<Command>,
    done: oneshot::Receiver<std::io::Result<T>>,
}

impl<T: Send + 'static> Worker<T> {
    fn spawn(
        name: &str,
        work: impl FnOnce(mpsc::Receiver<Command>) -> std::io::Result<T> + Send + 'static,
    ) -> std::io::Result<Worker<T>> {
        let (commands, received) = mpsc::channel(QUEUE);
        let (reply, done) = oneshot::channel();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let _ = reply.send(work(received));
            })?;
        Ok(Worker { commands, done })
    }

    async fn send(&self, command: Command) -> Result<(), Stopped> {
        self.commands.send(command).await.map_err(|_| Stopped)
    }

    async fn finish(self) -> std::io::Result<T> {
        drop(self.commands);
        self.done
            .await
            .unwrap_or_else(|_| Err(std::io::Error::other("a download thread panicked")))
    }
}

pub(crate) struct Sink {
    writer: Worker<u64>,
    hasher: Worker<Digest>,
    pending: BytesMut,
}

impl Sink {
    pub(crate) fn create(path: &Path) -> std::io::Result<Sink> {
        let file = File::create(path)?;
        Ok(Sink {
            writer: Worker::spawn("pinserve-fetch-write", move |commands| {
                write_all(file, commands)
            })?,
            hasher: Worker::spawn("pinserve-fetch-hash", |commands| Ok(hash_all(commands)))?,
            pending: BytesMut::new(),
        })
    }

    /// Queues a chunk; fails only if the writer has stopped (its error comes from `finish`).
    pub(crate) async fn write(&mut self, chunk: &[u8]) -> Result<(), Stopped> {
        self.pending.extend_from_slice(chunk);
        if self.pending.len() >= BATCH {
            self.send_pending().await?;
        }
        Ok(())
    }

    async fn send_pending(&mut self) -> Result<(), Stopped> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = self.pending.split().freeze();
        self.send(Command::Data(batch)).await
    }

    async fn send(&self, command: Command) -> Result<(), Stopped> {
        self.writer.send(command.clone()).await?;
        self.hasher.send(command).await
    }

    pub(crate) async fn restart(&mut self) -> Result<(), Stopped> {
        self.pending.clear();
        self.send(Command::Restart).await
    }

    /// Waits for every queued chunk to be written and hashed and the file fsynced.
    pub(crate) async fn finish(mut self) -> std::io::Result<Written> {
        let _ = self.send_pending().await;
        let size = self.writer.finish().await?;
        let digest = self.hasher.finish().await?;
        Ok(Written { digest, size })
    }
}

/// The writer stopped early (a write failed); `finish` says why.
#[derive(Debug)]
pub(crate) struct Stopped;

fn write_all(file: File, mut commands: mpsc::Receiver<Command>) -> std::io::Result<u64> {
    let mut out = BufWriter::with_capacity(WRITE_BUFFER, file);
    let (mut size, mut hinted) = (0u64, 0u64);
    while let Some(command) = commands.blocking_recv() {
        match command {
            Command::Data(chunk) => {
                out.write_all(&chunk)?;
                size += chunk.len() as u64;
                if size - hinted >= WRITEBACK_STEP {
                    out.flush()?;
                    start_writeback(out.get_ref(), hinted, size - hinted);
                    hinted = size;
                }
            }
            Command::Restart => {
                out.flush()?;
                out.get_mut().set_len(0)?;
                out.get_mut().seek(SeekFrom::Start(0))?;
                (size, hinted) = (0, 0);
            }
        }
    }
    out.flush()?;
    out.get_ref().sync_all()?;
    Ok(size)
}

fn hash_all(mut commands: mpsc::Receiver<Command>) -> Digest {
    let mut hasher = Sha256::new();
    while let Some(command) = commands.blocking_recv() {
        match command {
            Command::Data(chunk) => hasher.update(&chunk),
            Command::Restart => hasher = Sha256::new(),
        }
    }
    Digest::from(hasher)
}

#[cfg(target_os = "linux")]
fn start_writeback(file: &File, offset: u64, length: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(length)) = (i64::try_from(offset), i64::try_from(length)) else {
        return;
    };
    // SAFETY: sync_file_range only reads its arguments, and the descriptor is open. It is a hint:
    // a failure only means the final fsync does all the work.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset,
            length,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_: &File, _: u64, _: u64) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_hashes_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut sink = Sink::create(&path).unwrap();
        sink.write(b"wrong start").await.unwrap();
        sink.restart().await.unwrap();
        for chunk in [&b"hello "[..], &b"world"[..]] {
            sink.write(chunk).await.unwrap();
        }
        let written = sink.finish().await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"hello world");
        assert_eq!(
            (written.digest, written.size),
            (Digest::of_bytes(b"hello world"), 11)
        );
    }

    #[tokio::test]
    async fn large_files_go_through_batches_and_writeback_hints() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        let mut sink = Sink::create(&path).unwrap();
        let chunk = vec![3u8; 100_000];
        for _ in 0..210 {
            sink.write(&chunk).await.unwrap();
        }
        let written = sink.finish().await.unwrap();
        assert_eq!(written.size, 21_000_000);
        assert_eq!(written.digest, Digest::of_file(&path).unwrap());
    }
}
