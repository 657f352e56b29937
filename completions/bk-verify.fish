complete -c bk-verify -l config -d 'TOML config file [default: $XDG_CONFIG_HOME/bk/config.toml]' -r -F
complete -c bk-verify -l repo -d 'Repository: a directory, or s3://BUCKET/PREFIX in S3-compatible object storage (credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or AWS_PROFILE)' -r
complete -c bk-verify -l s3-endpoint -d 'S3 endpoint URL for providers other than AWS (MinIO, Garage, Ceph, Backblaze, Wasabi…) [default: AWS_ENDPOINT_URL, else AWS]' -r
complete -c bk-verify -l s3-region -d 'S3 region [default: AWS_REGION, AWS_DEFAULT_REGION, else us-east-1]' -r
complete -c bk-verify -l read-data-subset -d 'Decrypt and re-hash only part of the objects: "N/M" (part N of M by object id, e.g. 3/7), "today/M" (the part for today\'s day number, so "today/7" reads a different seventh each day of the week), or "P%" (a fixed pseudo-random P percent of the objects)' -r
complete -c bk-verify -s k -l key -d 'Secret key file (armored or binary OpenPGP)' -r -F
complete -c bk-verify -l passphrase-file -d 'File whose first line is the key\'s passphrase (else $BK_PASSPHRASE, else the terminal is asked)' -r -F
complete -c bk-verify -l id-key -d 'This machine\'s id key file of the repository, which authenticates snapshots [default: $XDG_DATA_HOME/bk/<repo id>.idkey]; without it, the repository\'s id key is used if your key certified it (`bk-index certify`)' -r -F
complete -c bk-verify -l signer -d 'Check snapshot signatures against this public key; repeatable (BK_SIGNER takes a comma-separated list). A signature that does not verify is always an error; an unsigned snapshot, or one signed by another key, is a warning' -r -F
complete -c bk-verify -s j -l jobs -d 'Worker threads [default: number of cores]' -r
complete -c bk-verify -l s3-path-style -d 'Address buckets as ENDPOINT/BUCKET rather than BUCKET.ENDPOINT (for MinIO and most self-hosted servers; automatic for an endpoint that is an IP address or localhost)'
complete -c bk-verify -l read-data -d 'Decrypt every object and re-hash the content (needs --key)'
complete -c bk-verify -l all-snapshots -d 'Check the records of every snapshot in the repository instead of stdin (needs --key)'
complete -c bk-verify -l orphans -d 'Also list objects that no snapshot references, as "orphan" records (implies --all-snapshots; needs --key). Orphans waste space but lose nothing, so they are not a fault unless --orphans-fail'
complete -c bk-verify -l orphans-fail -d 'With --orphans: exit 1 when there are orphans'
complete -c bk-verify -l inventory -d 'Keyless storage-side check: re-hash every pack file against the repository\'s pack inventory (BLAKE3 of the stored bytes); needs no key'
complete -c bk-verify -l allow-unauthenticated -d 'Read snapshots that cannot be authenticated (no valid MAC of this repository\'s backing-up hosts and no good --signer signature) with a warning instead of refusing them: anyone holding your public key could have made them'
complete -c bk-verify -l require-signature -d 'Refuse (exit status 5) any snapshot not signed by one of the --signer keys'
complete -c bk-verify -s h -l help -d 'Print help (see more with \'--help\')'
complete -c bk-verify -s V -l version -d 'Print version'
