"""The typed inputs, validated at load: the deployment file, hardware profiles, image pins, host ranges,
and the YAML reader that keeps line numbers for `file:line: key: problem` errors."""
