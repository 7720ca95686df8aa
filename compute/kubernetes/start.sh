# The compute container's command (sh -c, with mariadbd's options as
# arguments). It starts mariadbd itself instead of the image's entrypoint,
# so that a resume costs only mariadbd's own start, and it needs of the
# image only sh, mariadbd and mariadb-install-db.
#
# Environment (set by the driver):
#   SERVERLESSD_DATADIR         the datadir, on the volume
#   SERVERLESSD_VOLUME          where the volume is mounted
#   SERVERLESSD_ADMIN_PASSWORD  the daemon's account's password (Secret)
#   SERVERLESSD_INIT_SQL        the init file, @PASSWORD@ standing for it
#   SERVERLESSD_RUN_DIR         a private folder in memory for the init file
set -eu
datadir=$SERVERLESSD_DATADIR
password=$SERVERLESSD_ADMIN_PASSWORD
# The password is made by the driver: URL-safe base64, so it needs no
# quoting in SQL nor in sed below.
case $password in
'' | *[!A-Za-z0-9_-]*)
	echo "serverlessd: SERVERLESSD_ADMIN_PASSWORD must be URL-safe base64" >&2
	exit 1
	;;
esac
if [ ! -d "$datadir/mysql" ]; then
	# A datadir in a folder of the volume is made beside it and renamed,
	# so that a start killed half-way never leaves half a datadir.
	work=$datadir
	if [ "$datadir" != "$SERVERLESSD_VOLUME" ]; then
		work=$datadir.init
		rm -rf "$work"
	fi
	echo "serverlessd: initializing $datadir" >&2
	mariadb-install-db --datadir="$work" --skip-test-db --auth-root-authentication-method=socket >&2
	[ "$work" = "$datadir" ] || mv "$work" "$datadir"
fi
# Every start re-creates the daemon's account from the init file, so
# nothing a tenant did to it survives a restart. The file lives in memory
# (an emptyDir of medium Memory), readable by mariadbd's user only.
umask 077
init=$SERVERLESSD_RUN_DIR/init.sql
printf '%s\n' "$SERVERLESSD_INIT_SQL" | sed "s/@PASSWORD@/$password/" >"$init"
unset SERVERLESSD_ADMIN_PASSWORD SERVERLESSD_INIT_SQL password
exec mariadbd --datadir="$datadir" --init-file="$init" "$@"
