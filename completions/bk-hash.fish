complete -c bk-hash -l config -d 'TOML config file [default: $XDG_CONFIG_HOME/bk/config.toml]' -r -F
complete -c bk-hash -s j -l jobs -d 'Worker threads [default: number of cores]' -r
complete -c bk-hash -l reuse -d 'Take sha256 and objects from an earlier snapshot for files whose size, mtime, ctime, inode and device are unchanged, without reading them: a plaintext record file (e.g. saved `bk-index show` output), or "auto" for the local copy of the latest snapshot of each root in --repo' -r
complete -c bk-hash -l chunk-threshold -d 'Files larger than this are split into content-defined chunks, each its own object (suffixes K, M, G: powers of 1024)' -r
complete -c bk-hash -l repo -d 'Repository whose cached latest snapshot `--reuse auto` uses' -r
complete -c bk-hash -l id-key -d 'Local file holding the repository\'s id key, which authenticates the cache `--reuse auto` reads [default: $XDG_DATA_HOME/bk/<repo id>.idkey]' -r -F
complete -c bk-hash -l s3-endpoint -d 'S3 endpoint URL for providers other than AWS (MinIO, Garage, Ceph, Backblaze, Wasabi…) [default: AWS_ENDPOINT_URL, else AWS]' -r
complete -c bk-hash -l s3-region -d 'S3 region [default: AWS_REGION, AWS_DEFAULT_REGION, else us-east-1]' -r
complete -c bk-hash -l pause-file -d 'While this file exists, finish the files under way and take no new ones (checked about once a second); resume when it is removed' -r -F
complete -c bk-hash -l s3-path-style -d 'Address buckets as ENDPOINT/BUCKET rather than BUCKET.ENDPOINT (for MinIO and most self-hosted servers; automatic for an endpoint that is an IP address or localhost)'
complete -c bk-hash -l progress -d 'Show progress on stderr (default: only when stderr is a terminal)'
complete -c bk-hash -l no-progress -d 'Never show progress, even on a terminal'
complete -c bk-hash -s h -l help -d 'Print help (see more with \'--help\')'
complete -c bk-hash -s V -l version -d 'Print version'
