# A Perl DBI pool on DBD::MariaDB that stays open: it runs each line of
# stdin as a query on every one of its connections, with server-side
# prepared statements, and prints one line of results (or ERROR ...) per
# query. Arguments: host port user password.
use strict;
use warnings;
use DBI;

$| = 1;
my ($host, $port, $user, $password) = @ARGV;
my $dsn = "DBI:MariaDB:database=app;host=$host;port=$port;mariadb_server_prepare=1";
my @pool;
for my $i (0 .. 2) {
    my $dbh = DBI->connect($dsn, $user, $password, { RaiseError => 1, PrintError => 0, AutoCommit => 1 })
        or die $DBI::errstr;
    $dbh->do("SET \@who := ?", undef, "perl$i");
    push @pool, $dbh;
}
print "ready\n";
while (my $line = <STDIN>) {
    chomp $line;
    my @out;
    for my $dbh (@pool) {
        my $v = eval { ($dbh->selectrow_array($line))[0] };
        if ($@) {
            (my $e = $@) =~ s/\n/ /g;
            push @out, "ERROR $e";
        } else {
            push @out, defined $v ? $v : "NULL";
        }
    }
    print join(" | ", @out), "\n";
}
