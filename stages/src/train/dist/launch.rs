//! Who this process is in a data-parallel job, read from the environment the launchers people
//! already use set (issue 15): `torchrun` (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`,
//! `MASTER_PORT`) or Slurm's `srun` (`SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`, the
//! rendezvous host = the first host of `SLURM_STEP_NODELIST` / `SLURM_JOB_NODELIST`). With
//! neither, the process is a job of one.
//!
//! Open MPI's `mpirun` (`OMPI_COMM_WORLD_RANK`, `OMPI_COMM_WORLD_SIZE`,
//! `OMPI_COMM_WORLD_LOCAL_RANK`) starts the CPU backend's jobs.
//!
//! torchrun's variables win when several are set (torchrun started under `srun` sets its own
//! per worker), then mpirun's (an `mpirun` inside a Slurm allocation inherits the batch step's
//! `SLURM_PROCID = 0`), then Slurm's. `MASTER_PORT` defaults to torchrun's 29500.

use std::fmt;

/// The port torchrun's rendezvous uses when none is given.
pub const DEFAULT_PORT: u16 = 29500;

/// Which launcher set the variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    /// No launcher: world size 1.
    Single,
    Torchrun,
    Slurm,
    /// Open MPI's mpirun.
    Mpirun,
}

/// This process's place in the job and where rank 0 listens for the rendezvous.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub launcher: Launcher,
    pub rank: usize,
    pub world_size: usize,
    /// The rank among the processes of this node (picks the GPU).
    pub local_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
}

/// A variable that is missing or does not parse, with the launcher it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchError(pub String);

impl fmt::Display for LaunchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LaunchError {}

impl Launch {
    /// The job of one process (no launcher).
    pub fn single() -> Self {
        Launch {
            launcher: Launcher::Single,
            rank: 0,
            world_size: 1,
            local_rank: 0,
            master_addr: "127.0.0.1".into(),
            master_port: DEFAULT_PORT,
        }
    }

    /// From the process environment.
    pub fn from_process_env() -> Result<Self, LaunchError> {
        Self::from_env(|k| std::env::var(k).ok())
    }

    /// From any variable lookup (tests pass a map).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self, LaunchError> {
        let set = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let number = |k: &str, launcher: &str| -> Result<usize, LaunchError> {
            let v = set(k).ok_or_else(|| {
                LaunchError(format!(
                    "{launcher}: {k} is not set; launch with {launcher} (it sets it) or unset \
                     the launcher's other variables to run a single process"
                ))
            })?;
            v.trim().parse().map_err(|_| {
                LaunchError(format!(
                    "{launcher}: {k} = {v:?} is not a non-negative integer"
                ))
            })
        };
        let port = |launcher: &str| -> Result<u16, LaunchError> {
            match set("MASTER_PORT") {
                None => Ok(DEFAULT_PORT),
                Some(v) => v.trim().parse().map_err(|_| {
                    LaunchError(format!(
                        "{launcher}: MASTER_PORT = {v:?} is not a port number (1-65535)"
                    ))
                }),
            }
        };
        let launch = if set("RANK").is_some() || set("WORLD_SIZE").is_some() {
            let l = "torchrun";
            Launch {
                launcher: Launcher::Torchrun,
                rank: number("RANK", l)?,
                world_size: number("WORLD_SIZE", l)?,
                local_rank: set("LOCAL_RANK")
                    .map(|_| number("LOCAL_RANK", l))
                    .transpose()?
                    .unwrap_or(0),
                master_addr: set("MASTER_ADDR").ok_or_else(|| {
                    LaunchError(
                        "torchrun: MASTER_ADDR is not set (the host of rank 0's rendezvous)".into(),
                    )
                })?,
                master_port: port(l)?,
            }
        } else if set("OMPI_COMM_WORLD_SIZE").is_some() {
            let l = "mpirun";
            Launch {
                launcher: Launcher::Mpirun,
                rank: number("OMPI_COMM_WORLD_RANK", l)?,
                world_size: number("OMPI_COMM_WORLD_SIZE", l)?,
                local_rank: set("OMPI_COMM_WORLD_LOCAL_RANK")
                    .map(|_| number("OMPI_COMM_WORLD_LOCAL_RANK", l))
                    .transpose()?
                    .unwrap_or(0),
                master_addr: set("MASTER_ADDR").unwrap_or_else(|| "127.0.0.1".into()),
                master_port: port(l)?,
            }
        } else if set("SLURM_PROCID").is_some() {
            let l = "srun";
            let nodes = set("SLURM_STEP_NODELIST")
                .or_else(|| set("SLURM_JOB_NODELIST"))
                .ok_or_else(|| {
                    LaunchError(
                        "srun: neither SLURM_STEP_NODELIST nor SLURM_JOB_NODELIST is set; \
                         start the job with srun inside an allocation"
                            .into(),
                    )
                })?;
            Launch {
                launcher: Launcher::Slurm,
                rank: number("SLURM_PROCID", l)?,
                world_size: number("SLURM_NTASKS", l)?,
                local_rank: number("SLURM_LOCALID", l)?,
                master_addr: match set("MASTER_ADDR") {
                    Some(a) => a,
                    None => first_host(&nodes)?,
                },
                master_port: port(l)?,
            }
        } else {
            return Ok(Launch::single());
        };
        if launch.world_size == 0 || launch.rank >= launch.world_size {
            return Err(LaunchError(format!(
                "{:?}: rank {} of world size {}: the rank must be below the world size",
                launch.launcher, launch.rank, launch.world_size
            )));
        }
        if launch.master_port == 0 {
            return Err(LaunchError("MASTER_PORT = 0 is not a port".into()));
        }
        Ok(launch)
    }

    pub fn is_distributed(&self) -> bool {
        self.world_size > 1
    }
}

/// The first host of a Slurm host list (`node[01-04,07],gpu2` → `node01`), zero padding kept.
pub fn first_host(list: &str) -> Result<String, LaunchError> {
    let bad = || LaunchError(format!("SLURM node list {list:?} does not parse"));
    let list = list.trim();
    // The first entry: up to the first comma outside brackets.
    let mut depth = 0i32;
    let end = list
        .char_indices()
        .find(|&(_, c)| {
            match c {
                '[' => depth += 1,
                ']' => depth -= 1,
                _ => {}
            }
            c == ',' && depth == 0
        })
        .map_or(list.len(), |(i, _)| i);
    let entry = &list[..end];
    let Some(open) = entry.find('[') else {
        return if entry.is_empty() || entry.contains(']') {
            Err(bad())
        } else {
            Ok(entry.to_string())
        };
    };
    let close = entry.find(']').filter(|c| *c > open).ok_or_else(bad)?;
    let prefix = &entry[..open];
    let first = entry[open + 1..close]
        .split(',')
        .next()
        .and_then(|r| r.split('-').next())
        .filter(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()))
        .ok_or_else(bad)?;
    // Anything after the bracket (`a[1-2]b`) belongs to every host.
    Ok(format!("{prefix}{first}{}", &entry[close + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn no_launcher_is_a_job_of_one() {
        let l = Launch::from_env(env(&[])).unwrap();
        assert_eq!(l, Launch::single());
        assert!(!l.is_distributed());
    }

    #[test]
    fn torchrun_variables() {
        let l = Launch::from_env(env(&[
            ("RANK", "3"),
            ("WORLD_SIZE", "8"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "10.0.0.5"),
            ("MASTER_PORT", "29600"),
            // torchrun under srun: its own variables win.
            ("SLURM_PROCID", "0"),
        ]))
        .unwrap();
        assert_eq!(
            (l.launcher, l.rank, l.world_size, l.local_rank),
            (Launcher::Torchrun, 3, 8, 1)
        );
        assert_eq!((l.master_addr.as_str(), l.master_port), ("10.0.0.5", 29600));
        assert!(l.is_distributed());
    }

    #[test]
    fn slurm_variables_and_the_first_host() {
        let l = Launch::from_env(env(&[
            ("SLURM_PROCID", "5"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_JOB_NODELIST", "gpu[007-010,12],login1"),
        ]))
        .unwrap();
        assert_eq!(
            (l.launcher, l.rank, l.world_size, l.local_rank),
            (Launcher::Slurm, 5, 8, 1)
        );
        assert_eq!(
            (l.master_addr.as_str(), l.master_port),
            ("gpu007", DEFAULT_PORT)
        );
        // The step's list wins over the job's; MASTER_ADDR over both.
        let l = Launch::from_env(env(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "2"),
            ("SLURM_LOCALID", "0"),
            ("SLURM_JOB_NODELIST", "a[1-9]"),
            ("SLURM_STEP_NODELIST", "b[3-4]"),
        ]))
        .unwrap();
        assert_eq!(l.master_addr, "b3");
    }

    #[test]
    fn mpirun_variables_win_over_the_allocation_they_run_in() {
        let l = Launch::from_env(env(&[
            ("OMPI_COMM_WORLD_RANK", "1"),
            ("OMPI_COMM_WORLD_SIZE", "2"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
            // The batch step's, inherited by every rank mpirun starts.
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "1"),
            ("SLURM_LOCALID", "0"),
            ("SLURM_JOB_NODELIST", "n1"),
        ]))
        .unwrap();
        assert_eq!(
            (l.launcher, l.rank, l.world_size, l.local_rank),
            (Launcher::Mpirun, 1, 2, 1)
        );
        assert_eq!(l.master_addr, "127.0.0.1");
    }

    #[test]
    fn host_lists() {
        assert_eq!(first_host("node1").unwrap(), "node1");
        assert_eq!(first_host("node[01-04]").unwrap(), "node01");
        assert_eq!(first_host("n[7,9],m[1-2]").unwrap(), "n7");
        assert_eq!(first_host("rack[2-3]-gpu").unwrap(), "rack2-gpu");
        assert_eq!(first_host("x1,y[1-2]").unwrap(), "x1");
        for bad in ["", "node[", "node[]", "node[a-b]", "]x"] {
            assert!(first_host(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn mistakes_name_the_variable() {
        let e = Launch::from_env(env(&[("RANK", "0"), ("WORLD_SIZE", "2")])).unwrap_err();
        assert!(e.0.contains("MASTER_ADDR"), "{e}");
        let e = Launch::from_env(env(&[
            ("RANK", "2"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "h"),
        ]))
        .unwrap_err();
        assert!(e.0.contains("below the world size"), "{e}");
        let e = Launch::from_env(env(&[
            ("RANK", "x"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "h"),
        ]))
        .unwrap_err();
        assert!(e.0.contains("RANK = \"x\""), "{e}");
        let e = Launch::from_env(env(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "1"),
            ("SLURM_LOCALID", "0"),
        ]))
        .unwrap_err();
        assert!(e.0.contains("NODELIST"), "{e}");
        let e = Launch::from_env(env(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "1"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "99999"),
        ]))
        .unwrap_err();
        assert!(e.0.contains("MASTER_PORT"), "{e}");
    }
}
