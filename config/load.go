package config

import (
	"fmt"
	"os"
	"reflect"
	"strings"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// EnvPrefix prefixes every environment variable: api.listen is
// SERVERLESSD_API_LISTEN.
const EnvPrefix = "SERVERLESSD"

// Load builds the configuration: defaults, then the YAML file at path (if
// any), then SERVERLESSD_* environment variables, then the flags that were
// set. flags maps config keys to flag names; flags may be nil. It does not
// validate: call Validate.
func Load(path string, fs *pflag.FlagSet, flags map[string]string) (Config, error) {
	v := viper.New()
	setDefaults(v, "", reflect.ValueOf(Default()))
	v.SetEnvPrefix(EnvPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	if path != "" {
		v.SetConfigFile(path)
		v.SetConfigType("yaml")
		if err := v.ReadInConfig(); err != nil {
			return Config{}, fmt.Errorf("read config file %s: %w", path, err)
		}
	}
	for key, name := range flags {
		if f := fs.Lookup(name); f != nil && f.Changed {
			if err := v.BindPFlag(key, f); err != nil {
				return Config{}, fmt.Errorf("bind flag --%s: %w", name, err)
			}
		}
	}
	var c Config
	// UnmarshalExact turns a misspelt key in the file into an error rather
	// than a silently ignored option.
	if err := v.UnmarshalExact(&c); err != nil {
		return Config{}, fmt.Errorf("parse config: %w", err)
	}
	if strings.HasPrefix(c.DataDir, "~/") {
		home, _ := os.UserHomeDir()
		c.DataDir = home + c.DataDir[1:]
	}
	return c, nil
}

// setDefaults registers every leaf of the Config struct as a viper default,
// so that AutomaticEnv knows each key and an env var can override it.
func setDefaults(v *viper.Viper, prefix string, val reflect.Value) {
	t := val.Type()
	for i := range t.NumField() {
		key := t.Field(i).Tag.Get("mapstructure")
		if prefix != "" {
			key = prefix + "." + key
		}
		f := val.Field(i)
		if f.Kind() == reflect.Struct {
			setDefaults(v, key, f)
			continue
		}
		v.SetDefault(key, f.Interface())
	}
}
