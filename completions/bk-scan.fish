complete -c bk-scan -l config -d 'TOML config file [default: $XDG_CONFIG_HOME/bk/config.toml]' -r -F
complete -c bk-scan -s e -l exclude -d 'Leave out entries matching this glob (gitignore syntax); repeatable (BK_EXCLUDE takes one glob per line)' -r
complete -c bk-scan -s x -l one-file-system -d 'Do not cross file-system boundaries'
complete -c bk-scan -l gitignore -d 'Also honour .gitignore files (and .git/info/exclude)'
complete -c bk-scan -s h -l help -d 'Print help (see more with \'--help\')'
complete -c bk-scan -s V -l version -d 'Print version'
