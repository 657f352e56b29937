# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_bk_index_global_optspecs
    string join \n config= h/help V/version
end

function __fish_bk_index_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_bk_index_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_bk_index_using_subcommand
    set -l cmd (__fish_bk_index_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c bk-index -n "__fish_bk_index_needs_command" -l config -d 'TOML config file [default: $XDG_CONFIG_HOME/bk/config.toml]' -r -F
complete -c bk-index -n "__fish_bk_index_needs_command" -s h -l help -d 'Print help'
complete -c bk-index -n "__fish_bk_index_needs_command" -s V -l version -d 'Print version'
complete -c bk-index -n "__fish_bk_index_needs_command" -f -a "write" -d 'Collect sealed records from stdin into one encrypted snapshot; print its name'
complete -c bk-index -n "__fish_bk_index_needs_command" -f -a "list" -d 'List snapshots: time, host, files and bytes'
complete -c bk-index -n "__fish_bk_index_needs_command" -f -a "show" -d 'Decrypt a snapshot back to records (NDJSON) or CSV'
complete -c bk-index -n "__fish_bk_index_needs_command" -f -a "forget" -d 'Remove snapshots by a retention policy (keep-last, daily, weekly…)'
complete -c bk-index -n "__fish_bk_index_needs_command" -f -a "prune" -d 'Delete or repack packs whose objects no snapshot references; report the bytes freed'
complete -c bk-index -n "__fish_bk_index_needs_command" -f -a "repair" -d 'Check every blob of the given packs; drop the damaged ones so the next backup stores them again'
complete -c bk-index -n "__fish_bk_index_needs_command" -f -a "unlock" -d 'Remove stale locks (of dead or silent processes), or every lock with --all'
complete -c bk-index -n "__fish_bk_index_needs_command" -f -a "certify" -d 'Sign the repository\'s id key with your key, once, so that a machine with only your secret key can authenticate snapshots'
complete -c bk-index -n "__fish_bk_index_using_subcommand write" -l repo -d 'Repository: a directory, or s3://BUCKET/PREFIX in S3-compatible object storage (credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or AWS_PROFILE)' -r
complete -c bk-index -n "__fish_bk_index_using_subcommand write" -l s3-endpoint -d 'S3 endpoint URL for providers other than AWS (MinIO, Garage, Ceph, Backblaze, Wasabi…) [default: AWS_ENDPOINT_URL, else AWS]' -r
complete -c bk-index -n "__fish_bk_index_using_subcommand write" -l s3-region -d 'S3 region [default: AWS_REGION, AWS_DEFAULT_REGION, else us-east-1]' -r
complete -c bk-index -n "__fish_bk_index_using_subcommand write" -s r -l recipient -d 'Recipient public key file (armored or binary OpenPGP); repeat for several recipients (BK_RECIPIENT takes a comma-separated list)' -r -F
complete -c bk-index -n "__fish_bk_index_using_subcommand write" -l host -d 'Host name recorded in the snapshot name [default: this machine\'s]' -r
complete -c bk-index -n "__fish_bk_index_using_subcommand write" -l time -d 'Time recorded in the snapshot name, RFC 3339 (e.g. 2026-01-31T02:00:00Z), for importing older backups [default: now]' -r
complete -c bk-index -n "__fish_bk_index_using_subcommand write" -l id-key -d 'Local file holding the repository\'s id key, which authenticates the snapshot and the reuse cache [default: $XDG_DATA_HOME/bk/<repo id>.idkey]' -r -F
complete -c bk-index -n "__fish_bk_index_using_subcommand write" -l sign-key -d 'Sign the snapshot with this secret key (its signing subkey, else its primary key), inside the encryption' -r -F
complete -c bk-index -n "__fish_bk_index_using_subcommand write" -l passphrase-file -d 'File whose first line is the passphrase of --sign-key (else $BK_PASSPHRASE, else the terminal is asked)' -r -F
complete -c bk-index -n "__fish_bk_index_using_subcommand write" -l wait -d 'If the repository is locked by a conflicting run, keep trying this long before giving up with exit status 11 (e.g. 30s, 10m, 2h)' -r
complete -c bk-index -n "__fish_bk_index_using_subcommand write" -l config -d 'TOML config file [default: $XDG_CONFIG_HOME/bk/config.toml]' -r -F
complete -c bk-index -n "__fish_bk_index_using_subcommand write" -l s3-path-style -d 'Address buckets as ENDPOINT/BUCKET rather than BUCKET.ENDPOINT (for MinIO and most self-hosted servers; automatic for an endpoint that is an IP address or localhost)'
complete -c bk-index -n "__fish_bk_index_using_subcommand write" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c bk-index -n "__fish_bk_index_using_subcommand list" -l repo -d 'Repository: a directory, or s3://BUCKET/PREFIX in S3-compatible object storage (credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or AWS_PROFILE)' -r
complete -c bk-index -n "__fish_bk_index_using_subcommand list" -l s3-endpoint -d 'S3 endpoint URL for providers other than AWS (MinIO, Garage, Ceph, Backblaze, Wasabi…) [default: AWS_ENDPOINT_URL, else AWS]' -r
complete -c bk-index -n "__fish_bk_index_using_subcommand list" -l s3-region -d 'S3 region [default: AWS_REGION, AWS_DEFAULT_REGION, else us-east-1]' -r
complete -c bk-index -n "__fish_bk_index_using_subcommand list" -s k -l key -d 'Secret key file (armored or binary OpenPGP)' -r -F
complete -c bk-index -n "__fish_bk_index_using_subcommand list" -l passphrase-file -d 'File whose first line is the key\'s passphrase (else $BK_PASSPHRASE, else the terminal is asked)' -r -F
complete -c bk-index -n "__fish_bk_index_using_subcommand list" -l id-key -d 'This machine\'s id key file of the repository, which authenticates snapshots [default: $XDG_DATA_HOME/bk/<repo id>.idkey]; without it, the repository\'s id key is used if your key certified it (`bk-index certify`)' -r -F
complete -c bk-index -n "__fish_bk_index_using_subcommand list" -l signer -d 'Check snapshot signatures against this public key; repeatable (BK_SIGNER takes a comma-separated list). A signature that does not verify is always an error; an unsigned snapshot, or one signed by another key, is a warning' -r -F
complete -c bk-index -n "__fish_bk_index_using_subcommand list" -l config -d 'TOML config file [default: $XDG_CONFIG_HOME/bk/config.toml]' -r -F
complete -c bk-index -n "__fish_bk_index_using_subcommand list" -l s3-path-style -d 'Address buckets as ENDPOINT/BUCKET rather than BUCKET.ENDPOINT (for MinIO and most self-hosted servers; automatic for an endpoint that is an IP address or localhost)'
complete -c bk-index -n "__fish_bk_index_using_subcommand list" -l json -d 'Print one JSON object per snapshot instead of a table'
complete -c bk-index -n "__fish_bk_index_using_subcommand list" -l allow-unauthenticated -d 'Read snapshots that cannot be authenticated (no valid MAC of this repository\'s backing-up hosts and no good --signer signature) with a warning instead of refusing them: anyone holding your public key could have made them'
complete -c bk-index -n "__fish_bk_index_using_subcommand list" -l require-signature -d 'Refuse (exit status 5) any snapshot not signed by one of the --signer keys'
complete -c bk-index -n "__fish_bk_index_using_subcommand list" -s h -l help -d 'Print help'
complete -c bk-index -n "__fish_bk_index_using_subcommand show" -l repo -d 'Repository: a directory, or s3://BUCKET/PREFIX in S3-compatible object storage (credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or AWS_PROFILE)' -r
complete -c bk-index -n "__fish_bk_index_using_subcommand show" -l s3-endpoint -d 'S3 endpoint URL for providers other than AWS (MinIO, Garage, Ceph, Backblaze, Wasabi…) [default: AWS_ENDPOINT_URL, else AWS]' -r
complete -c bk-index -n "__fish_bk_index_using_subcommand show" -l s3-region -d 'S3 region [default: AWS_REGION, AWS_DEFAULT_REGION, else us-east-1]' -r
complete -c bk-index -n "__fish_bk_index_using_subcommand show" -s k -l key -d 'Secret key file (armored or binary OpenPGP)' -r -F
complete -c bk-index -n "__fish_bk_index_using_subcommand show" -l passphrase-file -d 'File whose first line is the key\'s passphrase (else $BK_PASSPHRASE, else the terminal is asked)' -r -F
complete -c bk-index -n "__fish_bk_index_using_subcommand show" -l id-key -d 'This machine\'s id key file of the repository, which authenticates snapshots [default: $XDG_DATA_HOME/bk/<repo id>.idkey]; without it, the repository\'s id key is used if your key certified it (`bk-index certify`)' -r -F
complete -c bk-index -n "__fish_bk_index_using_subcommand show" -l signer -d 'Check snapshot signatures against this public key; repeatable (BK_SIGNER takes a comma-separated list). A signature that does not verify is always an error; an unsigned snapshot, or one signed by another key, is a warning' -r -F
complete -c bk-index -n "__fish_bk_index_using_subcommand show" -l config -d 'TOML config file [default: $XDG_CONFIG_HOME/bk/config.toml]' -r -F
complete -c bk-index -n "__fish_bk_index_using_subcommand show" -l s3-path-style -d 'Address buckets as ENDPOINT/BUCKET rather than BUCKET.ENDPOINT (for MinIO and most self-hosted servers; automatic for an endpoint that is an IP address or localhost)'
complete -c bk-index -n "__fish_bk_index_using_subcommand show" -l csv -d 'Print CSV (path, kind, size, mtime, mode, sha256, objects…) instead of records'
complete -c bk-index -n "__fish_bk_index_using_subcommand show" -l allow-unauthenticated -d 'Read snapshots that cannot be authenticated (no valid MAC of this repository\'s backing-up hosts and no good --signer signature) with a warning instead of refusing them: anyone holding your public key could have made them'
complete -c bk-index -n "__fish_bk_index_using_subcommand show" -l require-signature -d 'Refuse (exit status 5) any snapshot not signed by one of the --signer keys'
complete -c bk-index -n "__fish_bk_index_using_subcommand show" -s h -l help -d 'Print help'
complete -c bk-index -n "__fish_bk_index_using_subcommand forget" -l repo -d 'Repository: a directory, or s3://BUCKET/PREFIX in S3-compatible object storage (credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or AWS_PROFILE)' -r
complete -c bk-index -n "__fish_bk_index_using_subcommand forget" -l s3-endpoint -d 'S3 endpoint URL for providers other than AWS (MinIO, Garage, Ceph, Backblaze, Wasabi…) [default: AWS_ENDPOINT_URL, else AWS]' -r
complete -c bk-index -n "__fish_bk_index_using_subcommand forget" -l s3-region -d 'S3 region [default: AWS_REGION, AWS_DEFAULT_REGION, else us-east-1]' -r
complete -c bk-index -n "__fish_bk_index_using_subcommand forget" -s k -l key -d 'Secret key file (armored or binary OpenPGP)' -r -F
complete -c bk-index -n "__fish_bk_index_using_subcommand forget" -l passphrase-file -d 'File whose first line is the key\'s passphrase (else $BK_PASSPHRASE, else the terminal is asked)' -r -F
complete -c bk-index -n "__fish_bk_index_using_subcommand forget" -l keep-last -d 'Keep the N newest snapshots' -r
complete -c bk-index -n "__fish_bk_index_using_subcommand forget" -l keep-hourly -d 'Keep the newest snapshot of each of the last N hours that have one' -r
complete -c bk-index -n "__fish_bk_index_using_subcommand forget" -l keep-daily -d 'Keep the newest snapshot of each of the last N days that have one' -r
complete -c bk-index -n "__fish_bk_index_using_subcommand forget" -l keep-weekly -d 'Keep the newest snapshot of each of the last N ISO weeks that have one' -r
complete -c bk-index -n "__fish_bk_index_using_subcommand forget" -l keep-monthly -d 'Keep the newest snapshot of each of the last N months that have one' -r
complete -c bk-index -n "__fish_bk_index_using_subcommand forget" -l keep-yearly -d 'Keep the newest snapshot of each of the last N years that have one' -r
complete -c bk-index -n "__fish_bk_index_using_subcommand forget" -l keep-within -d 'Keep every snapshot less than DURATION older than the newest of its group (e.g. 30d, 1y)' -r
complete -c bk-index -n "__fish_bk_index_using_subcommand forget" -l host -d 'Only consider snapshots of this host (others are left alone)' -r
complete -c bk-index -n "__fish_bk_index_using_subcommand forget" -l id-key -d 'This machine\'s id key file of the repository, which authenticates snapshots [default: $XDG_DATA_HOME/bk/<repo id>.idkey]; without it, the repository\'s id key is used if your key certified it (`bk-index certify`)' -r -F
complete -c bk-index -n "__fish_bk_index_using_subcommand forget" -l signer -d 'Check snapshot signatures against this public key; repeatable (BK_SIGNER takes a comma-separated list). A signature that does not verify is always an error; an unsigned snapshot, or one signed by another key, is a warning' -r -F
complete -c bk-index -n "__fish_bk_index_using_subcommand forget" -l wait -d 'If the repository is locked by a conflicting run, keep trying this long before giving up with exit status 11 (e.g. 30s, 10m, 2h)' -r
complete -c bk-index -n "__fish_bk_index_using_subcommand forget" -l config -d 'TOML config file [default: $XDG_CONFIG_HOME/bk/config.toml]' -r -F
complete -c bk-index -n "__fish_bk_index_using_subcommand forget" -l s3-path-style -d 'Address buckets as ENDPOINT/BUCKET rather than BUCKET.ENDPOINT (for MinIO and most self-hosted servers; automatic for an endpoint that is an IP address or localhost)'
complete -c bk-index -n "__fish_bk_index_using_subcommand forget" -l allow-unauthenticated -d 'Read snapshots that cannot be authenticated (no valid MAC of this repository\'s backing-up hosts and no good --signer signature) with a warning instead of refusing them: anyone holding your public key could have made them'
complete -c bk-index -n "__fish_bk_index_using_subcommand forget" -l require-signature -d 'Refuse (exit status 5) any snapshot not signed by one of the --signer keys'
complete -c bk-index -n "__fish_bk_index_using_subcommand forget" -s n -l dry-run -d 'Print what would be kept and removed, and remove nothing'
complete -c bk-index -n "__fish_bk_index_using_subcommand forget" -l json -d 'Print one JSON object per snapshot instead of text lines'
complete -c bk-index -n "__fish_bk_index_using_subcommand forget" -s h -l help -d 'Print help'
complete -c bk-index -n "__fish_bk_index_using_subcommand prune" -l repo -d 'Repository: a directory, or s3://BUCKET/PREFIX in S3-compatible object storage (credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or AWS_PROFILE)' -r
complete -c bk-index -n "__fish_bk_index_using_subcommand prune" -l s3-endpoint -d 'S3 endpoint URL for providers other than AWS (MinIO, Garage, Ceph, Backblaze, Wasabi…) [default: AWS_ENDPOINT_URL, else AWS]' -r
complete -c bk-index -n "__fish_bk_index_using_subcommand prune" -l s3-region -d 'S3 region [default: AWS_REGION, AWS_DEFAULT_REGION, else us-east-1]' -r
complete -c bk-index -n "__fish_bk_index_using_subcommand prune" -s k -l key -d 'Secret key file (armored or binary OpenPGP)' -r -F
complete -c bk-index -n "__fish_bk_index_using_subcommand prune" -l passphrase-file -d 'File whose first line is the key\'s passphrase (else $BK_PASSPHRASE, else the terminal is asked)' -r -F
complete -c bk-index -n "__fish_bk_index_using_subcommand prune" -l grace -d 'Never delete or repack a pack, or delete a temporary file, modified less than this long ago (protects records sealed but not yet in a snapshot)' -r
complete -c bk-index -n "__fish_bk_index_using_subcommand prune" -l max-unused -d 'Repack a pack (copy its used blobs into a new pack, then delete it) when more than this percentage of it is unused' -r
complete -c bk-index -n "__fish_bk_index_using_subcommand prune" -l wait -d 'If the repository is locked by a conflicting run, keep trying this long before giving up with exit status 11 (e.g. 30s, 10m, 2h)' -r
complete -c bk-index -n "__fish_bk_index_using_subcommand prune" -l config -d 'TOML config file [default: $XDG_CONFIG_HOME/bk/config.toml]' -r -F
complete -c bk-index -n "__fish_bk_index_using_subcommand prune" -l s3-path-style -d 'Address buckets as ENDPOINT/BUCKET rather than BUCKET.ENDPOINT (for MinIO and most self-hosted servers; automatic for an endpoint that is an IP address or localhost)'
complete -c bk-index -n "__fish_bk_index_using_subcommand prune" -s n -l dry-run -d 'Report what would be deleted, and delete nothing'
complete -c bk-index -n "__fish_bk_index_using_subcommand prune" -l json -d 'Also print a JSON summary on stdout'
complete -c bk-index -n "__fish_bk_index_using_subcommand prune" -l verbose-plan -d 'Print the plan on stdout first: one JSON line per pack with how much of it is used and what prune does with it'
complete -c bk-index -n "__fish_bk_index_using_subcommand prune" -s h -l help -d 'Print help'
complete -c bk-index -n "__fish_bk_index_using_subcommand repair" -l repo -d 'Repository: a directory, or s3://BUCKET/PREFIX in S3-compatible object storage (credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or AWS_PROFILE)' -r
complete -c bk-index -n "__fish_bk_index_using_subcommand repair" -l s3-endpoint -d 'S3 endpoint URL for providers other than AWS (MinIO, Garage, Ceph, Backblaze, Wasabi…) [default: AWS_ENDPOINT_URL, else AWS]' -r
complete -c bk-index -n "__fish_bk_index_using_subcommand repair" -l s3-region -d 'S3 region [default: AWS_REGION, AWS_DEFAULT_REGION, else us-east-1]' -r
complete -c bk-index -n "__fish_bk_index_using_subcommand repair" -s k -l key -d 'Secret key file (armored or binary OpenPGP)' -r -F
complete -c bk-index -n "__fish_bk_index_using_subcommand repair" -l passphrase-file -d 'File whose first line is the key\'s passphrase (else $BK_PASSPHRASE, else the terminal is asked)' -r -F
complete -c bk-index -n "__fish_bk_index_using_subcommand repair" -l wait -d 'If the repository is locked by a conflicting run, keep trying this long before giving up with exit status 11 (e.g. 30s, 10m, 2h)' -r
complete -c bk-index -n "__fish_bk_index_using_subcommand repair" -l config -d 'TOML config file [default: $XDG_CONFIG_HOME/bk/config.toml]' -r -F
complete -c bk-index -n "__fish_bk_index_using_subcommand repair" -l s3-path-style -d 'Address buckets as ENDPOINT/BUCKET rather than BUCKET.ENDPOINT (for MinIO and most self-hosted servers; automatic for an endpoint that is an IP address or localhost)'
complete -c bk-index -n "__fish_bk_index_using_subcommand repair" -s n -l dry-run -d 'Check and report, and change nothing'
complete -c bk-index -n "__fish_bk_index_using_subcommand repair" -s h -l help -d 'Print help'
complete -c bk-index -n "__fish_bk_index_using_subcommand unlock" -l repo -d 'Repository: a directory, or s3://BUCKET/PREFIX in S3-compatible object storage (credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or AWS_PROFILE)' -r
complete -c bk-index -n "__fish_bk_index_using_subcommand unlock" -l s3-endpoint -d 'S3 endpoint URL for providers other than AWS (MinIO, Garage, Ceph, Backblaze, Wasabi…) [default: AWS_ENDPOINT_URL, else AWS]' -r
complete -c bk-index -n "__fish_bk_index_using_subcommand unlock" -l s3-region -d 'S3 region [default: AWS_REGION, AWS_DEFAULT_REGION, else us-east-1]' -r
complete -c bk-index -n "__fish_bk_index_using_subcommand unlock" -l id-key -d 'Local file holding the repository\'s id key, with which the details of locks are read [default: $XDG_DATA_HOME/bk/<repo id>.idkey]; without it, locks are judged by their files\' modification times' -r -F
complete -c bk-index -n "__fish_bk_index_using_subcommand unlock" -l config -d 'TOML config file [default: $XDG_CONFIG_HOME/bk/config.toml]' -r -F
complete -c bk-index -n "__fish_bk_index_using_subcommand unlock" -l s3-path-style -d 'Address buckets as ENDPOINT/BUCKET rather than BUCKET.ENDPOINT (for MinIO and most self-hosted servers; automatic for an endpoint that is an IP address or localhost)'
complete -c bk-index -n "__fish_bk_index_using_subcommand unlock" -l all -d 'Remove every lock, live ones too: only when you are sure no bk program is using the repository (a prune running beside a backup can delete objects the backup needs)'
complete -c bk-index -n "__fish_bk_index_using_subcommand unlock" -s h -l help -d 'Print help'
complete -c bk-index -n "__fish_bk_index_using_subcommand certify" -l repo -d 'Repository: a directory, or s3://BUCKET/PREFIX in S3-compatible object storage (credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or AWS_PROFILE)' -r
complete -c bk-index -n "__fish_bk_index_using_subcommand certify" -l s3-endpoint -d 'S3 endpoint URL for providers other than AWS (MinIO, Garage, Ceph, Backblaze, Wasabi…) [default: AWS_ENDPOINT_URL, else AWS]' -r
complete -c bk-index -n "__fish_bk_index_using_subcommand certify" -l s3-region -d 'S3 region [default: AWS_REGION, AWS_DEFAULT_REGION, else us-east-1]' -r
complete -c bk-index -n "__fish_bk_index_using_subcommand certify" -s k -l key -d 'Secret key file (armored or binary OpenPGP)' -r -F
complete -c bk-index -n "__fish_bk_index_using_subcommand certify" -l passphrase-file -d 'File whose first line is the key\'s passphrase (else $BK_PASSPHRASE, else the terminal is asked)' -r -F
complete -c bk-index -n "__fish_bk_index_using_subcommand certify" -l id-key -d 'This machine\'s id key file of the repository, compared with the repository\'s before certifying [default: $XDG_DATA_HOME/bk/<repo id>.idkey]' -r -F
complete -c bk-index -n "__fish_bk_index_using_subcommand certify" -l config -d 'TOML config file [default: $XDG_CONFIG_HOME/bk/config.toml]' -r -F
complete -c bk-index -n "__fish_bk_index_using_subcommand certify" -l s3-path-style -d 'Address buckets as ENDPOINT/BUCKET rather than BUCKET.ENDPOINT (for MinIO and most self-hosted servers; automatic for an endpoint that is an IP address or localhost)'
complete -c bk-index -n "__fish_bk_index_using_subcommand certify" -s h -l help -d 'Print help'
