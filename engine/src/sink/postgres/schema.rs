//! The PostgreSQL schema: plain SQL migrations from `engine/migrations/postgres/` (compiled in),
//! applied at start, each once (recorded in `hotpath_migrations`, under an advisory lock so two
//! writers starting together do not race) and each idempotent by itself; the daily partitions
//! of the plain-PostgreSQL layout; and the retention option.
//!
//! A migration `NNN_name.sql` always applies; `NNN_name.timescale.sql` applies when the
//! TimescaleDB extension is available (it is then created), `NNN_name.plain.sql` when it is
//! not. With TimescaleDB the tables are hypertables and `postgres.retention_days` becomes a
//! retention policy; without it they are range-partitioned by day, the writer creates each
//! day's partition before writing into it and drops partitions past the retention.

use tokio_postgres::Client;

/// The migrations, in order: (file name, SQL).
pub const MIGRATIONS: [(&str, &str); 2] = [
    (
        "001_tables.plain.sql",
        include_str!("../../../migrations/postgres/001_tables.plain.sql"),
    ),
    (
        "001_tables.timescale.sql",
        include_str!("../../../migrations/postgres/001_tables.timescale.sql"),
    ),
];

/// The tables partitioned by day (plain layout).
pub const PARTITIONED: [&str; 2] = ["ticks", "books"];

/// An arbitrary constant: the advisory lock of the migrations.
const MIGRATION_LOCK: i64 = 0x686f_7470_6174_6801;

/// Which layout the database has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// TimescaleDB hypertables.
    Timescale,
    /// Plain tables partitioned by day.
    Plain,
}

/// Whether migration `name` applies under `layout`.
pub fn applies(name: &str, layout: Layout) -> bool {
    if name.ends_with(".timescale.sql") {
        layout == Layout::Timescale
    } else if name.ends_with(".plain.sql") {
        layout == Layout::Plain
    } else {
        true
    }
}

/// Applies the migrations not applied yet; returns the layout. Idempotent.
pub async fn migrate(client: &mut Client) -> Result<Layout, tokio_postgres::Error> {
    let available = client
        .query_opt(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'",
            &[],
        )
        .await?
        .is_some();
    let layout = match available {
        // Available but not loadable (not in shared_preload_libraries, no privilege): the
        // plain layout, said once.
        true => match client
            .batch_execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            .await
        {
            Ok(()) => Layout::Timescale,
            Err(e) => {
                tracing::warn!(
                    "postgres: timescaledb is available but cannot be created ({e}): plain \
                     partitioned tables"
                );
                Layout::Plain
            }
        },
        false => Layout::Plain,
    };
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS hotpath_migrations (\
         name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await?;
    for (name, sql) in MIGRATIONS.iter().filter(|(n, _)| applies(n, layout)) {
        let done = tx
            .query_opt("SELECT 1 FROM hotpath_migrations WHERE name = $1", &[name])
            .await?
            .is_some();
        if !done {
            tx.batch_execute(sql).await?;
            tx.execute("INSERT INTO hotpath_migrations (name) VALUES ($1)", &[name])
                .await?;
            tracing::info!("postgres: applied migration {name}");
        }
    }
    tx.commit().await?;
    Ok(layout)
}

/// The partition of `table` for UTC day `day` (days since 1970-01-01): `ticks_p20261130`.
pub fn partition_name(table: &str, day: i64) -> String {
    let (y, m, d) = civil(day);
    format!("{table}_p{y:04}{m:02}{d:02}")
}

/// The statement creating `table`'s partition for `day`, if missing.
pub fn create_partition(table: &str, day: i64) -> String {
    let (y, m, d) = civil(day);
    let (y2, m2, d2) = civil(day + 1);
    format!(
        "CREATE TABLE IF NOT EXISTS {} PARTITION OF {table} FOR VALUES FROM \
         ('{y:04}-{m:02}-{d:02} 00:00:00+00') TO ('{y2:04}-{m2:02}-{d2:02} 00:00:00+00')",
        partition_name(table, day)
    )
}

/// The day of a partition name made by [`partition_name`], if it is one of `table`'s.
pub fn partition_day(table: &str, name: &str) -> Option<i64> {
    let date = name.strip_prefix(table)?.strip_prefix("_p")?;
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let num = |r: std::ops::Range<usize>| date.get(r).and_then(|s| s.parse::<i64>().ok());
    Some(days_from_civil(num(0..4)?, num(4..6)?, num(6..8)?))
}

/// Applies `postgres.retention_days`: a TimescaleDB retention policy, or dropping the daily
/// partitions wholly older than `today - days`. Returns the partitions dropped.
pub async fn retain(
    client: &Client,
    layout: Layout,
    days: u32,
    today: i64,
) -> Result<Vec<String>, tokio_postgres::Error> {
    if layout == Layout::Timescale {
        for table in PARTITIONED {
            client
                .batch_execute(&format!(
                    "SELECT add_retention_policy('{table}', INTERVAL '{days} days', \
                     if_not_exists => TRUE)"
                ))
                .await?;
        }
        return Ok(Vec::new());
    }
    let mut dropped = Vec::new();
    for table in PARTITIONED {
        let rows = client
            .query(
                "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
                 JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = $1",
                &[&table],
            )
            .await?;
        for row in rows {
            let name: String = row.get(0);
            // A day's partition ends at the next midnight: wholly older than the cut-off.
            if partition_day(table, &name).is_some_and(|d| d < today - i64::from(days)) {
                client
                    .batch_execute(&format!("DROP TABLE IF EXISTS {name}"))
                    .await?;
                dropped.push(name);
            }
        }
    }
    Ok(dropped)
}

/// (year, month, day) of days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// Days since 1970-01-01 of a civil date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The UTC day of an ISO-8601 date or time (`2026-11-30`, `2026-11-30T10:00:00.000000Z`, as
/// the writer's dead letters hold it): its first ten characters, checked.
pub fn day_of_text(text: &str) -> Option<i64> {
    let date = text.get(..10)?.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        let part = date.get(r)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| std::str::from_utf8(part).ok()?.parse::<i64>().ok())?
    };
    if date[4] != b'-' || date[7] != b'-' {
        return None;
    }
    let (y, m, d) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    ((1..=12).contains(&m) && (1..=31).contains(&d)).then(|| days_from_civil(y, m, d))
}

/// The UTC day of Unix microseconds.
pub fn day_of_us(us: i64) -> i64 {
    us.div_euclid(86_400_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_file_is_compiled_in_and_chosen_by_layout() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .expect("the migrations directory")
            .map(|e| {
                e.expect("an entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        files.sort();
        let listed: Vec<&str> = MIGRATIONS.iter().map(|(n, _)| *n).collect();
        assert_eq!(files, listed);
        assert!(applies("001_tables.plain.sql", Layout::Plain));
        assert!(!applies("001_tables.plain.sql", Layout::Timescale));
        assert!(applies("001_tables.timescale.sql", Layout::Timescale));
        assert!(applies("002_x.sql", Layout::Plain));
    }

    #[test]
    fn days_of_text() {
        let day = day_of_us(1_796_083_200_000_000); // 2026-12-01T00:00:00Z
        assert_eq!(day_of_text("2026-12-01T00:00:00.000000Z"), Some(day));
        assert_eq!(day_of_text("2026-11-30"), Some(day - 1));
        for bad in [
            "",
            "2026-11",
            "2026/11/30",
            "2026-13-01",
            "20x6-11-30",
            "yesterday!!",
        ] {
            assert_eq!(day_of_text(bad), None, "{bad}");
        }
    }

    #[test]
    fn partitions_by_utc_day() {
        let day = day_of_us(1_796_083_200_000_000); // 2026-12-01T00:00:00Z
        assert_eq!(partition_name("ticks", day), "ticks_p20261201");
        assert_eq!(partition_name("ticks", day - 1), "ticks_p20261130");
        assert_eq!(partition_day("ticks", "ticks_p20261130"), Some(day - 1));
        assert_eq!(partition_day("ticks", "books_p20261130"), None);
        assert_eq!(partition_day("ticks", "ticks_p2026113"), None);
        assert_eq!(day_of_us(-1), -1);
        assert!(
            create_partition("books", day - 1)
                .contains("FROM ('2026-11-30 00:00:00+00') TO ('2026-12-01 00:00:00+00')")
        );
    }
}
