//! The checks every tokens stage makes on the parameters its shard writer takes, one message
//! for each, wherever the stage is.

/// The zstd levels a stage takes. The negative ("fast") levels find no matches in float
/// tokens and store their blocks raw: the fastest, still zstd frames any reader takes. 0 is
/// refused: zstd reads it as its default level, a second spelling of 3.
pub const ZSTD_LEVELS: std::ops::RangeInclusive<i32> = -7..=22;

/// The first of `shard_samples`, `zstd_level` that a shard writer cannot take: the param's
/// key and what is wrong, for the stage's config error.
pub fn shard_param_problem(
    shard_samples: usize,
    zstd_level: i32,
) -> Option<(&'static str, String)> {
    if shard_samples == 0 {
        return Some(("shard_samples", "shard_samples must be positive".into()));
    }
    if !ZSTD_LEVELS.contains(&zstd_level) || zstd_level == 0 {
        return Some((
            "zstd_level",
            "zstd_level must be in -7..=-1 (fast levels: floats stored as they are) or 1..=22"
                .into(),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_bad_value_names_its_key() {
        assert_eq!(
            shard_param_problem(0, 3).map(|p| p.0),
            Some("shard_samples")
        );
        assert_eq!(shard_param_problem(1, 0).map(|p| p.0), Some("zstd_level"));
        assert_eq!(shard_param_problem(1, 23).map(|p| p.0), Some("zstd_level"));
        assert_eq!(shard_param_problem(1, -8).map(|p| p.0), Some("zstd_level"));
        assert_eq!(shard_param_problem(1, -1), None);
        assert_eq!(shard_param_problem(64, 22), None);
    }
}
