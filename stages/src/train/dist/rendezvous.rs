//! The rendezvous of a GPU job: rank 0 makes NCCL's unique id and hands it to every other rank
//! over TCP at `MASTER_ADDR:MASTER_PORT`, the address torchrun and our Slurm recipe set (as
//! torch.distributed's TCP store does). Only this handshake uses the socket; the collectives
//! themselves are NCCL's.

use anyhow::{Context, Result};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Greeting on the wire, so a stray connection (another job on the port) is refused.
const MAGIC: &[u8; 8] = b"lm4ve-r1";

/// Rank 0 serves `payload` to the `world - 1` other ranks; every other rank returns it.
/// Every rank gives up after `timeout`.
pub fn exchange(
    rank: usize,
    world: usize,
    addr: &str,
    port: u16,
    payload: Option<&[u8]>,
    timeout: Duration,
) -> Result<Vec<u8>> {
    if rank == 0 {
        let payload = payload.context("rank 0 must bring the payload")?;
        serve(world, port, payload, timeout)?;
        Ok(payload.to_vec())
    } else {
        fetch(rank, addr, port, timeout)
    }
}

fn serve(world: usize, port: u16, payload: &[u8], timeout: Duration) -> Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", port)).with_context(|| {
        format!("rank 0: cannot listen on port {port} for the rendezvous (MASTER_PORT); is another job using it?")
    })?;
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + timeout;
    let mut served = std::collections::BTreeSet::new();
    while served.len() + 1 < world {
        match listener.accept() {
            Ok((mut s, peer)) => {
                s.set_nonblocking(false)?;
                s.set_read_timeout(Some(Duration::from_secs(10)))?;
                let mut hello = [0u8; 16];
                if s.read_exact(&mut hello).is_err() || &hello[..8] != MAGIC {
                    tracing::warn!(
                        "rendezvous: ignoring a connection from {peer} that is not an lm4ve rank"
                    );
                    continue;
                }
                let mut r = [0u8; 8];
                r.copy_from_slice(&hello[8..]);
                let rank = u64::from_le_bytes(r) as usize;
                s.write_all(&(payload.len() as u64).to_le_bytes())?;
                s.write_all(payload)?;
                if rank > 0 && rank < world {
                    served.insert(rank);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "rank 0: {} of {} ranks reached the rendezvous on port {port} within {} s; check that every rank sees MASTER_ADDR and the port is open",
                    served.len() + 1,
                    world,
                    timeout.as_secs()
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e).context("rendezvous accept"),
        }
    }
    Ok(())
}

fn fetch(rank: usize, addr: &str, port: u16, timeout: Duration) -> Result<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let target = format!("{addr}:{port}");
    loop {
        let attempt = (|| -> Result<Vec<u8>> {
            let sock = target
                .to_socket_addrs()
                .with_context(|| format!("resolving MASTER_ADDR {addr}"))?
                .next()
                .with_context(|| format!("MASTER_ADDR {addr} has no address"))?;
            let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(5))?;
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
            s.write_all(MAGIC)?;
            s.write_all(&(rank as u64).to_le_bytes())?;
            let mut n = [0u8; 8];
            s.read_exact(&mut n)?;
            let n = u64::from_le_bytes(n) as usize;
            anyhow::ensure!(n <= 1 << 20, "rendezvous: a {n}-byte payload is not an id");
            let mut buf = vec![0u8; n];
            s.read_exact(&mut buf)?;
            Ok(buf)
        })();
        match attempt {
            Ok(b) => return Ok(b),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!("rank {rank}: rendezvous at {target} not ready ({e:#}); retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "rank {rank}: no rendezvous at {target} within {} s (MASTER_ADDR / MASTER_PORT); is rank 0 running?",
                        timeout.as_secs()
                    )
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_zero_hands_the_id_to_every_rank() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let id: Vec<u8> = (0..128u8).collect();
        let t = Duration::from_secs(20);
        let clients: Vec<_> = (1..4)
            .map(|r| std::thread::spawn(move || exchange(r, 4, "127.0.0.1", port, None, t)))
            .collect();
        assert_eq!(exchange(0, 4, "127.0.0.1", port, Some(&id), t).unwrap(), id);
        for c in clients {
            assert_eq!(c.join().unwrap().unwrap(), id);
        }
    }

    #[test]
    fn a_missing_rank_zero_is_a_clear_error() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let e = exchange(1, 2, "127.0.0.1", port, None, Duration::from_millis(300)).unwrap_err();
        assert!(format!("{e:#}").contains("is rank 0 running?"), "{e:#}");
        let e = exchange(
            0,
            2,
            "127.0.0.1",
            port,
            Some(b"x"),
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("1 of 2 ranks"), "{e:#}");
    }
}
