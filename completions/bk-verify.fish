complete -c bk-verify -l config -d 'TOML config file [default: $XDG_CONFIG_HOME/bk/config.toml]' -r -F
complete -c bk-verify -l repo -d 'Repository directory' -r -F
complete -c bk-verify -s k -l key -d 'Secret key file (armored or binary OpenPGP)' -r -F
complete -c bk-verify -l passphrase-file -d 'File whose first line is the key\'s passphrase (else $BK_PASSPHRASE, else the terminal is asked)' -r -F
complete -c bk-verify -s j -l jobs -d 'Worker threads [default: number of cores]' -r
complete -c bk-verify -l read-data -d 'Decrypt every object and re-hash the content (needs --key)'
complete -c bk-verify -s h -l help -d 'Print help (see more with \'--help\')'
complete -c bk-verify -s V -l version -d 'Print version'
