"""Operations logs: the usage log, the crash log and the missing-models log, batched into SQLite."""
