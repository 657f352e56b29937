complete -c bk-seal -l config -d 'TOML config file [default: $XDG_CONFIG_HOME/bk/config.toml]' -r -F
complete -c bk-seal -l repo -d 'Repository: a directory, or s3://BUCKET/PREFIX in S3-compatible object storage (credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or AWS_PROFILE)' -r
complete -c bk-seal -l s3-endpoint -d 'S3 endpoint URL for providers other than AWS (MinIO, Garage, Ceph, Backblaze, Wasabi…) [default: AWS_ENDPOINT_URL, else AWS]' -r
complete -c bk-seal -l s3-region -d 'S3 region [default: AWS_REGION, AWS_DEFAULT_REGION, else us-east-1]' -r
complete -c bk-seal -s r -l recipient -d 'Recipient public key file (armored or binary OpenPGP); repeat for several recipients (BK_RECIPIENT takes a comma-separated list)' -r -F
complete -c bk-seal -l id-key -d 'Local file holding the repository\'s id key [default: $XDG_DATA_HOME/bk/<repo id>.idkey]' -r -F
complete -c bk-seal -s k -l key -d 'Secret key file (armored or binary OpenPGP)' -r -F
complete -c bk-seal -l passphrase-file -d 'File whose first line is the key\'s passphrase (else $BK_PASSPHRASE, else the terminal is asked)' -r -F
complete -c bk-seal -s j -l jobs -d 'Worker threads [default: number of cores]' -r
complete -c bk-seal -l chunk-threshold -d 'Files larger than this are split into content-defined chunks, each its own object (suffixes K, M, G: powers of 1024)' -r
complete -c bk-seal -l pack-size -d 'Close a pack once it holds this much (suffixes K, M, G): fewer, larger packs mean fewer requests to remote storage' -r
complete -c bk-seal -l pause-file -d 'While this file exists, finish the files under way and take no new ones (checked about once a second); resume when it is removed' -r -F
complete -c bk-seal -l wait -d 'If the repository is locked by a conflicting run, keep trying this long before giving up with exit status 11 (e.g. 30s, 10m, 2h)' -r
complete -c bk-seal -l s3-path-style -d 'Address buckets as ENDPOINT/BUCKET rather than BUCKET.ENDPOINT (for MinIO and most self-hosted servers; automatic for an endpoint that is an IP address or localhost)'
complete -c bk-seal -l init -d 'Create the repository if it does not exist yet'
complete -c bk-seal -l progress -d 'Show progress on stderr (default: only when stderr is a terminal)'
complete -c bk-seal -l no-progress -d 'Never show progress, even on a terminal'
complete -c bk-seal -s h -l help -d 'Print help (see more with \'--help\')'
complete -c bk-seal -s V -l version -d 'Print version'
