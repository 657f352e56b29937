complete -c bk-hash -l config -d 'TOML config file [default: $XDG_CONFIG_HOME/bk/config.toml]' -r -F
complete -c bk-hash -s j -l jobs -d 'Worker threads [default: number of cores]' -r
complete -c bk-hash -s h -l help -d 'Print help (see more with \'--help\')'
complete -c bk-hash -s V -l version -d 'Print version'
