"""Request metadata leaves the hot path here: record type, bounded queue, journal, writer."""
