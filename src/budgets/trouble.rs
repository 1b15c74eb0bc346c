//! Load or outage: what a failed budget check says about the database.

/// What a failed check says about the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Trouble {
    /// It answers, not in time: load or lock contention.
    Busy,
    /// It does not answer, or refuses the check's writes.
    Down,
}

/// A pool timeout alone cannot tell load from an outage: sqlx also times out while it
/// retries a refused connection. What tells them apart is whether the database is
/// `answering` other queries (answered during the wait or within `QUIET_MS` of its
/// end, and not found down since). Lock waits that time out are the database's own
/// answer that it is busy.
pub(super) fn trouble(error: &sqlx::Error, sqlite: bool, answering: bool) -> Trouble {
    match error {
        sqlx::Error::Database(error) => {
            let busy = error.code().is_some_and(|code| {
                if sqlite {
                    // Extended result codes; the low byte is the primary one:
                    // SQLITE_BUSY (5), SQLITE_LOCKED (6).
                    code.parse::<i32>()
                        .is_ok_and(|code| matches!(code & 0xff, 5 | 6))
                } else {
                    // lock_not_available (lock_timeout), query_canceled
                    // (statement_timeout), too_many_connections, serialization_failure,
                    // deadlock_detected.
                    matches!(&*code, "55P03" | "57014" | "53300" | "40001" | "40P01")
                }
            });
            if busy { Trouble::Busy } else { Trouble::Down }
        }
        sqlx::Error::PoolTimedOut if answering => Trouble::Busy,
        _ => Trouble::Down,
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::{Trouble, trouble};

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Coded(&'static str);

    impl sqlx::error::DatabaseError for Coded {
        fn message(&self) -> &str {
            self.0
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.0))
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    fn coded(code: &'static str) -> sqlx::Error {
        sqlx::Error::Database(Box::new(Coded(code)))
    }

    #[test]
    fn a_pool_timeout_is_load_only_if_the_database_is_answering() {
        let timeout = sqlx::Error::PoolTimedOut;
        assert_eq!(trouble(&timeout, false, true), Trouble::Busy);
        assert_eq!(trouble(&timeout, true, true), Trouble::Busy);
        // sqlx also times out while it retries a refused connection.
        assert_eq!(trouble(&timeout, false, false), Trouble::Down);
        assert_eq!(trouble(&timeout, true, false), Trouble::Down);
    }

    #[test]
    fn lock_waits_are_load_and_other_failures_an_outage() {
        for busy in ["55P03", "57014", "53300", "40001", "40P01"] {
            assert_eq!(trouble(&coded(busy), false, false), Trouble::Busy, "{busy}");
        }
        // SQLITE_BUSY, SQLITE_LOCKED and their extended codes (BUSY_SNAPSHOT = 517).
        for busy in ["5", "6", "517", "262"] {
            assert_eq!(trouble(&coded(busy), true, false), Trouble::Busy, "{busy}");
        }
        // SQLITE_READONLY (8), SQLITE_IOERR_WRITE (778), SQLITE_FULL (13): the file
        // refuses writes, which waiting will not mend.
        for down in ["8", "778", "13"] {
            assert_eq!(trouble(&coded(down), true, true), Trouble::Down, "{down}");
        }
        // Postgres read-only (25006), admin shutdown (57P01), and a SQLite code on
        // Postgres or the other way round.
        for down in ["25006", "57P01", "5"] {
            assert_eq!(trouble(&coded(down), false, true), Trouble::Down, "{down}");
        }
        assert_eq!(trouble(&coded("55P03"), true, true), Trouble::Down);
        let refused = sqlx::Error::Io(std::io::ErrorKind::ConnectionRefused.into());
        assert_eq!(trouble(&refused, false, true), Trouble::Down);
    }
}
