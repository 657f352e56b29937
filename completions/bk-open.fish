complete -c bk-open -l config -d 'TOML config file [default: $XDG_CONFIG_HOME/bk/config.toml]' -r -F
complete -c bk-open -l repo -d 'Repository: a directory, or s3://BUCKET/PREFIX in S3-compatible object storage (credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or AWS_PROFILE)' -r
complete -c bk-open -l s3-endpoint -d 'S3 endpoint URL for providers other than AWS (MinIO, Garage, Ceph, Backblaze, Wasabi…) [default: AWS_ENDPOINT_URL, else AWS]' -r
complete -c bk-open -l s3-region -d 'S3 region [default: AWS_REGION, AWS_DEFAULT_REGION, else us-east-1]' -r
complete -c bk-open -s k -l key -d 'Secret key file (armored or binary OpenPGP)' -r -F
complete -c bk-open -l passphrase-file -d 'File whose first line is the key\'s passphrase (else $BK_PASSPHRASE, else the terminal is asked)' -r -F
complete -c bk-open -l object -d 'Decrypt this object (hex id) to stdout' -r
complete -c bk-open -l to -d 'Restore the records read on stdin under this directory, each root in its own place: a record of root /home/a/docs with path letters/x.txt becomes DIR/home/a/docs/letters/x.txt (records of root / and records without a root go to DIR/PATH)' -r -F
complete -c bk-open -l root -d 'With --to: restore only the records of root ROOT (as bk-scan recorded it, e.g. /home/a/docs), straight into DIR (DIR/letters/x.txt); records of other roots are skipped and counted' -r -F
complete -c bk-open -l snapshot -d 'With --to: restore the records of this snapshot ("latest", a name or a unique prefix) straight from the repository, after checking its signature, instead of reading records on stdin' -r
complete -c bk-open -s j -l jobs -d 'Worker threads [default: number of cores]' -r
complete -c bk-open -l id-key -d 'This machine\'s id key file of the repository, which authenticates snapshots [default: $XDG_DATA_HOME/bk/<repo id>.idkey]; without it, the repository\'s id key is used if your key certified it (`bk-index certify`)' -r -F
complete -c bk-open -l signer -d 'Check snapshot signatures against this public key; repeatable (BK_SIGNER takes a comma-separated list). A signature that does not verify is always an error; an unsigned snapshot, or one signed by another key, is a warning' -r -F
complete -c bk-open -l s3-path-style -d 'Address buckets as ENDPOINT/BUCKET rather than BUCKET.ENDPOINT (for MinIO and most self-hosted servers; automatic for an endpoint that is an IP address or localhost)'
complete -c bk-open -l allow-unauthenticated -d 'Read snapshots that cannot be authenticated (no valid MAC of this repository\'s backing-up hosts and no good --signer signature) with a warning instead of refusing them: anyone holding your public key could have made them'
complete -c bk-open -l require-signature -d 'Refuse (exit status 5) any snapshot not signed by one of the --signer keys'
complete -c bk-open -l progress -d 'Show progress on stderr (default: only when stderr is a terminal)'
complete -c bk-open -l no-progress -d 'Never show progress, even on a terminal'
complete -c bk-open -s h -l help -d 'Print help (see more with \'--help\')'
complete -c bk-open -s V -l version -d 'Print version'
