complete -c bk-open -l config -d 'TOML config file [default: $XDG_CONFIG_HOME/bk/config.toml]' -r -F
complete -c bk-open -l repo -d 'Repository directory' -r -F
complete -c bk-open -s k -l key -d 'Secret key file (armored or binary OpenPGP)' -r -F
complete -c bk-open -l passphrase-file -d 'File whose first line is the key\'s passphrase (else $BK_PASSPHRASE, else the terminal is asked)' -r -F
complete -c bk-open -l object -d 'Decrypt this object (hex id) to stdout' -r
complete -c bk-open -l to -d 'Restore the records read on stdin under this directory' -r -F
complete -c bk-open -s h -l help -d 'Print help (see more with \'--help\')'
complete -c bk-open -s V -l version -d 'Print version'
