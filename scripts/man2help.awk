# man2help.awk — turn the SYNOPSIS, OPTIONS and EXIT STATUS sections of a man page into a C
# string, so that `--help` and the man page come from one source.
# Usage: awk -v name=help_run -f scripts/man2help.awk man/tend-run.1 > help-run.h
# Understands the small roff subset our pages use: .TH .SH .SS .TP .PP .LP .P .B .I .BR .IR
# .RB .RI .BI .IB .RS .RE .nf .fi .EX .EE .IP and the inline \fB \fI \fR \fP \- \e \(em.

function inline(s) {
	gsub(/\\f[BIRP]/, "", s)
	gsub(/\\-/, "-", s)
	gsub(/\\\(em/, "--", s)
	gsub(/\\e/, "\\", s)
	gsub(/\\&/, "", s)
	return s
}
function args(s,   out, n, i, a, inq, c, cur) {
	# Split roff macro arguments (double quotes group words) and join them without spaces,
	# as the alternating-font macros do.
	out = ""; cur = ""; inq = 0
	for (i = 1; i <= length(s); i++) {
		c = substr(s, i, 1)
		if (c == "\"") { inq = !inq; continue }
		if (c == " " && !inq) { out = out cur; cur = ""; continue }
		cur = cur c
	}
	return out cur
}
function flush_synopsis() {
	if (syn != "") emit("  " syn)
	syn = ""
}
function emit(s) {
	gsub(/\\/, "\\\\", s)
	gsub(/"/, "\\\"", s)
	printf "\t\"%s\\n\"\n", s
}
BEGIN { keep = 0; indent = ""; tag = 0; printf "/* generated from the man page by scripts/man2help.awk: edit the page */\nstatic const char %s[] =\n", name }
/^\.\\"/ { next }
/^\.SH/ {
	sec = $0; sub(/^\.SH[ \t]*/, "", sec); gsub(/"/, "", sec)
	keep = (sec == "SYNOPSIS" || sec == "OPTIONS" || sec == "EXIT STATUS")
	flush_synopsis()
	insyn = (sec == "SYNOPSIS")
	if (keep) { if (printed) emit(""); emit(sec); printed = 1 }
	indent = "  "; tag = 0; next
}
!keep { next }
/^\.SS/ { s = $0; sub(/^\.SS[ \t]*/, "", s); gsub(/"/, "", s); emit(""); emit("  " s); next }
/^\.TP/ { tag = 1; next }
/^\.(PP|LP|P|IP)([ \t]|$)/ { flush_synopsis(); emit(""); indent = "  "; next }
/^\.br([ \t]|$)/ { flush_synopsis(); next }
/^\.(RS|RE|nf|fi|EX|EE|TH|in|sp|ad|na)/ { next }
{
	line = $0
	if (line ~ /^\.(B|I)[ \t]/) { line = substr(line, 4); gsub(/"/, "", line) }
	else if (line ~ /^\.(BR|IR|RB|RI|BI|IB)[ \t]/) { line = substr(line, 5); line = args(line) }
	line = inline(line)
	if (insyn) { syn = syn (syn == "" ? "" : " ") line; next }
	if (tag) { emit("  " line); indent = "        "; tag = 0; next }
	emit(indent line)
}
END { flush_synopsis(); print "\t;" }
