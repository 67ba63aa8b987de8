"""Amazon S3 and S3-compatible stores (MinIO): paged listing, ETags, deletions by key diff."""
